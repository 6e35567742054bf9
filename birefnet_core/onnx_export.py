"""ONNX export of BiRefNet: standard operators, dynamic batch and size, logits first.

No custom operator and no third-party exporter is needed because every layer here is plain
PyTorch: the deformable convolution exports as four Gathers, a weighted sum and a MatMul (see
`deform_conv2d_torch`), Swin's window bookkeeping as Range / Where / ScatterElements on the graph's
own shapes. The graph is traced with torch.export (torch.onnx's dynamo path), simplified
(constant folding, dead and duplicate node removal: what stays valid for every input size), checked with `onnx.checker`, and, for float32, run once
in onnxruntime against the eager model before it is handed out.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .model import BiRefNet
from .size import Size
from .variants import IMAGENET_MEAN, IMAGENET_STD, Variant
from .weights import WeightsInfo

if TYPE_CHECKING:
    import onnx
    import onnx_ir

__all__ = [
    "DEFAULT_OPSET",
    "INPUT_NAME",
    "MIN_OPSET",
    "OUTPUT_NAME",
    "ExportCheckError",
    "OnnxExportSettings",
    "export_onnx",
    "model_metadata",
]

log = logging.getLogger(__name__)

#: torch.onnx writes opset 18 natively; its down-conversion to 17 fails (no adapter for Pad),
#: and a failed conversion would silently keep 18, so older opsets are refused up front.
MIN_OPSET = 18
DEFAULT_OPSET = 18
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
#: Largest side a dynamic graph accepts (a bound torch.export needs; far above working sizes).
MAX_SIDE = 8192
MAX_BATCH = 1024
#: Size the dynamic graph is traced at: big enough that no traced size is 0 or 1 by accident.
_TRACE_SIZE = Size(256, 256)
#: Largest |logit difference| to eager PyTorch the float32 export may show on its trace input.
VERIFY_TOLERANCE = 1e-3


class ExportCheckError(RuntimeError):
    """The exported graph does not reproduce the model it came from."""


@dataclass(frozen=True)
class OnnxExportSettings:
    """How to export. A static graph (`dynamic=False`) has a fixed `batch` x 3 x `resolution`
    input; a dynamic one takes any batch and any H, W that are multiples of 32."""

    opset: int = DEFAULT_OPSET
    dynamic: bool = True
    fp16: bool = False
    resolution: Size | None = None
    batch: int = 1

    def __post_init__(self) -> None:
        if self.opset < MIN_OPSET:
            raise ValueError(f"opset {self.opset} is too old: BiRefNet needs opset {MIN_OPSET} or newer")
        if self.dynamic and self.resolution is not None:
            raise ValueError("a resolution fixes the graph's size: pass it with dynamic=False (--no-dynamic)")
        if self.resolution is not None and (self.resolution.height % 32 or self.resolution.width % 32):
            raise ValueError(f"resolution {self.resolution} must be a multiple of 32 on both sides")
        if self.batch < 1:
            raise ValueError(f"batch must be at least 1, got {self.batch}")

    @property
    def precision(self) -> str:
        return "float16" if self.fp16 else "float32"


class _Float16Graph(nn.Module):
    """The model in float16 behind float32 inputs and outputs, so callers (rembg among them)
    feed and read float32 whatever the file's precision."""

    def __init__(self, model: BiRefNet) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


@contextlib.contextmanager
def _size_oblivious_tracing() -> Iterator[None]:
    """Trace without specialising sizes that happen to be 1 at trace time.

    Without it a batch of 1, or a stage whose feature map fits one attention window, bakes a
    layout assumption (and a runtime assertion) into the graph that other sizes then violate.
    """
    from torch.fx.experimental import _config as fx_config

    with fx_config.patch(backed_size_oblivious=True):  # type: ignore[attr-defined]  # torch adds patch() to config modules at import
        yield


def _trace_input(settings: OnnxExportSettings, working: Size | None) -> torch.Tensor:
    batch, size = (2, _TRACE_SIZE) if settings.dynamic else (settings.batch, settings.resolution or working)
    if size is None:
        raise ValueError("a static graph needs a resolution: this variant has no fixed working size")
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(0))


def _dynamic_shapes(settings: OnnxExportSettings) -> dict | None:
    if not settings.dynamic:
        return None
    dim = torch.export.Dim
    rows = dim("rows", min=1, max=MAX_SIDE // 32)
    cols = dim("cols", min=1, max=MAX_SIDE // 32)
    return {"x": {0: dim("batch", min=1, max=MAX_BATCH), 2: 32 * rows, 3: 32 * cols}}


def _simplified(model: onnx_ir.Model) -> onnx.ModelProto:
    """Constant folding, then identity, dead-node, duplicate-initialiser and common-subexpression
    removal (what stays exact for every input size), without the tracer's per-node metadata.

    onnxscript's full optimiser adds a pattern-rewriting pass that took 45% of a 3-minute export
    (demo model, 2 cores; 88 s without it) to save a tenth of the nodes, without making
    onnxruntime (which fuses on its own when it loads the graph) any faster: 0.39 s against
    0.43 s per 512x512 image.
    """
    import onnx_ir
    import onnx_ir.passes.common as passes
    import onnxscript.optimizer

    onnxscript.optimizer.fold_constants(model)
    # onnx_ir logs every merged initialiser at INFO: hundreds of lines per export.
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    onnx_ir.passes.Sequential(
        passes.InlinePass(),
        passes.IdentityEliminationPass(),
        passes.RemoveUnusedNodesPass(),
        passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        passes.DeduplicateInitializersPass(),
        passes.CommonSubexpressionEliminationPass(),
        passes.RemoveUnusedNodesPass(),
        passes.RemoveUnusedOpsetsPass(),
        # Per-node stack traces of the tracer: a quarter of the file (25.5 -> 18.8 MB for demo).
        passes.ClearMetadataAndDocStringPass(),
    )(model)
    return onnx_ir.serde.serialize_model(model)


def _name_dimensions(proto: onnx.ModelProto, dynamic: bool) -> None:
    """Readable names for the dynamic axes of the input and the first output."""
    if not dynamic:
        return
    for value in (proto.graph.input[0], proto.graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        for dim, name in zip(dims, ("batch", None, "height", "width"), strict=True):
            if name is not None:
                dim.dim_param = name


def _set_metadata(proto: onnx.ModelProto, metadata: Mapping[str, str]) -> None:
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)


def _verify(data: bytes, model: nn.Module, x: torch.Tensor) -> float:
    """Largest |logit difference| between onnxruntime (CPU) and eager PyTorch on `x`."""
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
    with torch.inference_mode():
        want = model(x).float().numpy()
    if got.shape != want.shape:
        raise ExportCheckError(f"exported graph returns {got.shape}, the model {want.shape}")
    return float(np.abs(got - want).max())


def model_metadata(model: BiRefNet) -> dict[str, str]:
    """What a file needs to say about where it came from and how to feed it: variant, backbone,
    weights sha256 and source (from `load_model`'s `.variant` / `.weights`), mean and std."""
    variant: Variant | None = getattr(model, "variant", None)
    weights: WeightsInfo | None = getattr(model, "weights", None)
    return {
        "variant": variant.name if variant else "",
        "backbone": model.backbone_name,
        "weights_sha256": weights.sha256 if weights else "",
        "weights_source": weights.source if weights else "",
        "mean": json.dumps(list(variant.mean if variant else IMAGENET_MEAN)),
        "std": json.dumps(list(variant.std if variant else IMAGENET_STD)),
    }


def export_onnx(
    model: BiRefNet,
    *,
    working_size: Size | None = None,
    settings: OnnxExportSettings | None = None,
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """Serialized ONNX model of `model` (moved to CPU float32 in eval mode for the export).

    Input `image` (B x 3 x H x W float32, normalised with the stored mean/std); first output
    `logits` (B x 1 x H x W float32; sigmoid gives the mask). Stored with it: `model_metadata`,
    then `metadata`, the opset, precision and working size (default: the static resolution, else
    the variant's; `dynamic` when the variant's is per image). Raises ExportCheckError when a
    float32 graph's logits differ from eager PyTorch's by more than VERIFY_TOLERANCE.
    """
    import onnx

    settings = settings or OnnxExportSettings()
    variant = getattr(model, "variant", None)
    working_size = working_size or settings.resolution or (variant.size if variant else None)
    model = model.to(device="cpu", dtype=torch.float32).eval()
    x = _trace_input(settings, working_size)
    graph: nn.Module = _Float16Graph(model) if settings.fp16 else model
    with torch.no_grad(), _size_oblivious_tracing():
        program = torch.export.export(graph, (x,), dynamic_shapes=_dynamic_shapes(settings), strict=False)
        exported = torch.onnx.export(
            program,
            (x,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=settings.opset,
            optimize=False,
            verify=False,
            verbose=False,
        )
    assert exported is not None  # the dynamo exporter returns a program (only the legacy one returns None)
    proto = _simplified(exported.model)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if opset != settings.opset:  # torch.onnx keeps its own opset when it cannot convert down
        raise ExportCheckError(
            f"the graph could not be converted to opset {settings.opset}; it needs {opset}"
        )
    _name_dimensions(proto, settings.dynamic)
    _set_metadata(
        proto,
        {
            **model_metadata(model),
            **(metadata or {}),
            "working_size": f"{working_size.width}x{working_size.height}" if working_size else "dynamic",
            "opset": str(settings.opset),
            "precision": settings.precision,
            "dynamic": json.dumps(settings.dynamic),
            "input": f"{INPUT_NAME}: B x 3 x H x W float32, (rgb / 255 - mean) / std",
            "output": f"{OUTPUT_NAME}: B x 1 x H x W float32 logits; sigmoid gives the mask",
            "exporter": f"torch {torch.__version__}",
        },
    )
    proto.doc_string = "BiRefNet dichotomous segmentation; first output: logits."
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    if not settings.fp16:  # float16 kernels are a GPU's; a CPU check would mostly fall back
        difference = _verify(data, model, x)
        log.info("exported graph matches eager PyTorch to %.2e on its trace input", difference)
        if difference > VERIFY_TOLERANCE:
            raise ExportCheckError(
                f"exported graph's logits differ from PyTorch's by {difference:.3g} (> {VERIFY_TOLERANCE})"
            )
    return data
