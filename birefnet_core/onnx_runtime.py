"""An exported BiRefNet run by onnxruntime, shaped like the PyTorch model for the Predictor.

`OnnxRuntimeModel` maps a normalised B x 3 x H x W float32 torch tensor to B x 1 x H x W logits,
as `BiRefNet` does, so the Predictor's batching, padding and post-processing stay the same for
every backend. On CUDA the tensors never leave the GPU: inputs and outputs are bound in place
(IO binding) and onnxruntime runs on PyTorch's current stream. cuDNN's convolution algorithm is
chosen heuristically rather than by an exhaustive search, which onnxruntime would otherwise
repeat for every new input shape. The TensorRT backend is onnxruntime's TensorRT execution
provider, with its engines and timing cache kept in a directory, so a restarted worker reuses
the engine instead of spending minutes rebuilding it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .backend import Backend
from .onnx_export import INPUT_NAME, OUTPUT_NAME
from .size import Size
from .variants import VARIANTS, Variant

__all__ = [
    "BackendUnavailableError",
    "OnnxRuntimeModel",
    "execution_providers",
]

log = logging.getLogger(__name__)

#: Where TensorRT engines go when no directory is given.
DEFAULT_ENGINE_CACHE = Path.home() / ".cache" / "birefnet-ray" / "tensorrt"


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here (package or execution provider missing)."""


def execution_providers(
    backend: Backend,
    device: torch.device,
    *,
    engine_cache: str | os.PathLike | None = None,
    fp16: bool = False,
    profile: tuple[Size, int] | None = None,
    stream: int | None = None,
) -> list[tuple[str, dict[str, str]]]:
    """onnxruntime providers with their options, most preferred first.

    `profile` (working size, largest batch) gives TensorRT the one optimisation profile a job
    needs (batches 1..max at that size), so it builds one engine instead of one per shape.
    `stream` is the CUDA stream (as an integer handle) onnxruntime should run on.
    """
    if backend == "torch":
        raise ValueError("the torch backend does not use onnxruntime")
    if device.type == "cpu":
        if backend == "tensorrt":
            raise BackendUnavailableError("the tensorrt backend needs a CUDA device, not the CPU")
        return [("CPUExecutionProvider", {})]
    if device.type != "cuda":
        raise BackendUnavailableError(f"onnxruntime runs on cpu or cuda, not {device.type}")
    index = str(device.index or 0)
    cuda = {
        "device_id": index,
        "cudnn_conv_algo_search": "HEURISTIC",
        "cudnn_conv_use_max_workspace": "1",
        "arena_extend_strategy": "kSameAsRequested",
    }
    if stream is not None:
        cuda.update(has_user_compute_stream="1", user_compute_stream=str(stream))
    providers = [("CUDAExecutionProvider", cuda), ("CPUExecutionProvider", {})]
    if backend == "onnxruntime":
        return providers
    cache = str(Path(engine_cache or DEFAULT_ENGINE_CACHE).expanduser())
    trt = {
        "device_id": index,
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": cache,
        "trt_fp16_enable": str(fp16),
        "trt_max_workspace_size": str(4 << 30),
    }
    if stream is not None:
        trt.update(has_user_compute_stream="1", user_compute_stream=str(stream))
    if profile is not None:
        size, batch = profile
        shape = f"3x{size.height}x{size.width}"
        trt.update(
            trt_profile_min_shapes=f"{INPUT_NAME}:1x{shape}",
            trt_profile_opt_shapes=f"{INPUT_NAME}:{batch}x{shape}",
            trt_profile_max_shapes=f"{INPUT_NAME}:{batch}x{shape}",
        )
    return [("TensorrtExecutionProvider", trt), *providers]


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailableError(
            "onnxruntime is not installed: pip install 'birefnet-ray[onnx]' (CPU) or onnxruntime-gpu (CUDA, TensorRT)"
        ) from None
    return onnxruntime


def _check_available(ort: Any, providers: list[tuple[str, dict[str, str]]], backend: str) -> None:
    available = ort.get_available_providers()
    wanted = providers[0][0]
    if wanted not in available:
        raise BackendUnavailableError(
            f"backend {backend!r} needs onnxruntime's {wanted}, which this installation lacks "
            f"(it has {', '.join(available)}); install onnxruntime-gpu built for this CUDA (and TensorRT)"
        )


class OnnxRuntimeModel:
    """An exported BiRefNet (bytes or a path) in an onnxruntime session on `device`.

    Carries what the Predictor reads off a model: `variant` and `size` from the file's metadata,
    `precision`, and `backend` for the manifest.
    """

    def __init__(
        self,
        model: bytes | str | os.PathLike,
        *,
        backend: Backend = "onnxruntime",
        device: str | torch.device = "cpu",
        engine_cache: str | os.PathLike | None = None,
        max_batch: int = 4,
        threads: int | None = None,
        source: str | None = None,
    ) -> None:
        ort = _import_onnxruntime()
        self.backend = backend
        self.device = torch.device(device)
        self.source = source or (str(model) if not isinstance(model, bytes) else "<bytes>")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        model_arg = model if isinstance(model, bytes) else str(model)
        # TensorRT's options depend on the file (its precision, one profile at its working
        # size), so only then is the file opened twice: first unoptimised, to read them.
        known = _metadata(_probe_session(ort, model_arg)) if backend == "tensorrt" else {}
        stream = torch.cuda.current_stream(self.device).cuda_stream if self.device.type == "cuda" else None
        size = _parse_size(known.get("working_size"))
        providers = execution_providers(
            backend,
            self.device,
            engine_cache=engine_cache,
            fp16=known.get("precision") == "float16",
            profile=(size, max_batch) if size else None,
            stream=stream,
        )
        _check_available(ort, providers, backend)
        if backend == "tensorrt":
            Path(providers[0][1]["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
        self.session = ort.InferenceSession(
            model_arg,
            sess_options=options,
            providers=[name for name, _ in providers],
            provider_options=[opts for _, opts in providers],
        )
        self.providers = self.session.get_providers()
        self.metadata: Mapping[str, str] = known or _metadata(self.session)
        self.precision = self.metadata.get("precision", "float32")
        self.variant: Variant | None = VARIANTS.get(self.metadata.get("variant", ""))
        self.size = _parse_size(self.metadata.get("working_size"))
        log.info("onnxruntime session for %s on %s: %s", self.source, self.device, self.providers)

    @property
    def input_name(self) -> str:
        return self.metadata["_input"]

    @property
    def output_name(self) -> str:
        return self.metadata["_output"]

    @property
    def mean(self) -> tuple[float, float, float] | None:
        return tuple(json.loads(self.metadata["mean"])) if "mean" in self.metadata else None

    @property
    def std(self) -> tuple[float, float, float] | None:
        return tuple(json.loads(self.metadata["std"])) if "std" in self.metadata else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W normalised float32 -> B x 1 x H x W float32 logits, on x's device."""
        x = x.float().contiguous()
        if x.device.type != "cuda":
            (logits,) = self.session.run([self.output_name], {self.input_name: x.numpy()})
            return torch.from_numpy(logits)
        out = torch.empty((x.shape[0], 1, *x.shape[2:]), dtype=torch.float32, device=x.device)
        binding = self.session.io_binding()
        binding.bind_input(
            self.input_name, "cuda", x.device.index or 0, np.float32, tuple(x.shape), x.data_ptr()
        )
        binding.bind_output(
            self.output_name, "cuda", out.device.index or 0, np.float32, tuple(out.shape), out.data_ptr()
        )
        self.session.run_with_iobinding(binding)
        return out


def _probe_session(ort: Any, model: bytes | str) -> Any:
    """A CPU session without graph optimisation: cheap to open, enough to read the file."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def _metadata(session: Any) -> dict[str, str]:
    """The file's custom metadata plus the names of its first input and output (`_input`, `_output`)."""
    names = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
    if names[0][:1] != [INPUT_NAME] or names[1][:1] != [OUTPUT_NAME]:
        log.warning(
            "the ONNX model has inputs %s and outputs %s, not this exporter's %r -> %r; using the first of each",
            *names, INPUT_NAME, OUTPUT_NAME,
        )  # fmt: skip
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    metadata["_input"], metadata["_output"] = names[0][0], names[1][0]
    return metadata


def _parse_size(text: str | None) -> Size | None:
    """'1024x768' (width x height, as the metadata writes it) -> Size(height=768, width=1024)."""
    if not text or text == "dynamic":
        return None
    width, height = (int(v) for v in text.lower().split("x"))
    return Size(height, width)
