"""Test support: factories for inputs and rows, throwaway servers and clusters, and pytest plugins.

Plugins (registered in ``tests/conftest.py``): ``seaweedfs`` (S3 fixtures), ``embedded_ray`` (an
in-process Ray), ``devices`` (skips ``gpu`` tests without CUDA) and ``onnx_models`` (one ONNX
export of the demo model per session). Everything else is imported.
"""
