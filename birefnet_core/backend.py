"""The runtimes a BiRefNet can run in, by name: a light module, for configs and manifests.

`torch` runs the PyTorch model; `onnxruntime` and `tensorrt` run its ONNX export (see
`onnx_export`, `onnx_runtime`), TensorRT through onnxruntime's TensorRT execution provider.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["BACKENDS", "Backend"]

Backend = Literal["torch", "onnxruntime", "tensorrt"]
BACKENDS: tuple[str, ...] = get_args(Backend)
