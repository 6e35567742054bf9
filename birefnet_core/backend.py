"""The runtimes a BiRefNet can run in, by name: a light module, for configs and manifests.

`torch` runs the PyTorch model; `onnxruntime` and `tensorrt` run its ONNX export (see
`onnx_export`, `onnx_runtime`), TensorRT through onnxruntime's TensorRT execution provider.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["BACKENDS", "Backend", "is_onnx_file"]

Backend = Literal["torch", "onnxruntime", "tensorrt"]
BACKENDS: tuple[str, ...] = get_args(Backend)


def is_onnx_file(source: str) -> bool:
    """Whether a weights source names an exported graph (run by onnxruntime, never by torch)."""
    return source.lower().endswith(".onnx")
