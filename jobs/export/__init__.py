"""`python -m jobs.export`: BiRefNet as an ONNX file that onnxruntime, TensorRT and rembg can run.

load_model (any weights source) -> birefnet_core.onnx_export (torch.export with dynamic batch and
size, simplified, checked, verified in onnxruntime) -> write_bytes_atomic (local or S3).
"""

from .cli import COMMAND, export, main
from .config import ExportConfig

__all__ = ["COMMAND", "ExportConfig", "export", "main"]
