"""Test support: factories for inputs and rows, throwaway servers and clusters, and pytest plugins.

Plugins (registered in ``tests/conftest.py``): ``seaweedfs`` (S3 fixtures), ``embedded_ray`` (an
in-process Ray) and ``devices`` (skips ``gpu`` tests without CUDA). Everything else is imported.
"""
