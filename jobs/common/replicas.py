"""Which model an inference actor runs: BiRefNet in PyTorch, or an exported graph in
onnxruntime / TensorRT.

For the exported backends the weights may already be an `.onnx` file (from `birefnet export`;
read from any store), or a PyTorch checkpoint, which is exported once per machine into a local
cache keyed by the weights' sha256 and the export settings; actors that start together wait on a
file lock for the first one's export rather than each spending minutes on their own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import torch
from filelock import FileLock

from birefnet_core.backend import Backend, is_onnx_file
from birefnet_core.model import BiRefNet
from birefnet_core.onnx_export import OnnxExportSettings, export_onnx
from birefnet_core.onnx_runtime import OnnxRuntimeModel
from birefnet_core.precision import dtype_name
from birefnet_core.predictor import Predictor
from birefnet_core.runtime import set_cpu_threads
from birefnet_core.size import Size
from birefnet_core.weights import CheckpointMismatchError, load_model
from connectors.storage import S3Options, open_input, read_bytes, write_bytes_atomic

__all__ = [
    "DEFAULT_ONNX_CACHE",
    "ModelIdentity",
    "ReplicaConfig",
    "ReplicaSpec",
    "load_inference_model",
    "load_predictor",
    "local_device",
]

log = logging.getLogger(__name__)

#: Where checkpoints exported for the onnxruntime / TensorRT backends are kept between runs.
DEFAULT_ONNX_CACHE = Path.home() / ".cache" / "birefnet-ray" / "onnx"


@dataclass(frozen=True)
class ModelIdentity:
    """What the manifest records about the model behind a mask."""

    weights_sha256: str
    weights_source: str
    backend: str
    dtype: str = ""


def _cached_export(model: BiRefNet, settings: OnnxExportSettings, cache: Path) -> Path:
    """The exported file for these weights and settings, exporting it the first time."""
    cache.mkdir(parents=True, exist_ok=True)
    key = f"{model.weights.sha256[:16]}-{settings.precision}-opset{settings.opset}-torch{torch.__version__}"
    path = cache / f"birefnet-{key.replace('+', '_')}.onnx"
    with FileLock(f"{path}.lock"):
        if not path.is_file():
            log.info("exporting %s to ONNX for this machine (once): %s", model.weights.source, path)
            write_bytes_atomic(str(path), export_onnx(model, settings=settings))
    return path


def _onnx_model(
    weights: str,
    variant: str,
    backend: Backend,
    device: str,
    s3: S3Options,
    sha256: str | None,
    fp16: bool,
    onnx_cache: str | None,
    engine_cache: str | None,
    batch_size: int,
    threads: int | None,
) -> tuple[OnnxRuntimeModel, ModelIdentity]:
    if is_onnx_file(weights):
        data = read_bytes(weights, s3)
        digest = hashlib.sha256(data).hexdigest()
        source: bytes | Path = data
    else:
        torch_model = load_model(
            weights, variant=variant, sha256=sha256, opener=lambda uri: open_input(uri, s3)
        )
        settings = OnnxExportSettings(fp16=fp16)
        source = _cached_export(torch_model, settings, Path(onnx_cache or DEFAULT_ONNX_CACHE).expanduser())
        digest = torch_model.weights.sha256
        del torch_model
    model = OnnxRuntimeModel(
        source,
        backend=backend,
        device=device,
        engine_cache=engine_cache,
        max_batch=batch_size,
        threads=threads,
        source=weights,
    )
    exported_from = model.metadata.get("variant")
    if exported_from and exported_from != variant:
        raise CheckpointMismatchError(
            f"{weights!r} was exported from variant {exported_from!r}, but the job runs {variant!r}"
        )
    weights_sha256 = model.metadata.get("weights_sha256") or digest
    if is_onnx_file(weights) and sha256 and sha256.lower() not in (digest, weights_sha256):
        raise CheckpointMismatchError(
            f"{weights!r} has sha256 {digest} and was exported from weights {weights_sha256}; expected {sha256}"
        )
    return model, ModelIdentity(weights_sha256, weights, backend)


def load_inference_model(
    weights: str,
    *,
    variant: str,
    backend: Backend,
    device: str,
    dtype: str,
    s3: S3Options,
    sha256: str | None = None,
    onnx_cache: str | None = None,
    engine_cache: str | None = None,
    batch_size: int = 4,
    threads: int | None = None,
) -> tuple[BiRefNet | OnnxRuntimeModel, ModelIdentity]:
    """The model one actor runs, and what the manifest says about it.

    For the exported backends `dtype` float16 (on CUDA) selects a float16 export; everything else
    runs the graph in float32 (onnxruntime has no bfloat16 CPU kernels worth using).
    """
    if backend == "torch":
        if is_onnx_file(weights):
            raise ValueError(f"{weights!r} is an ONNX file: run it with --backend onnxruntime or tensorrt")
        model = load_model(weights, variant=variant, sha256=sha256, opener=lambda uri: open_input(uri, s3))
        return model, ModelIdentity(model.weights.sha256, model.weights.source, "torch")
    fp16 = dtype == "float16" and device == "cuda"
    return _onnx_model(
        weights, variant, backend, device, s3, sha256, fp16, onnx_cache, engine_cache, batch_size,
        threads or (os.cpu_count() if device == "cpu" else None),
    )  # fmt: skip


def local_device(choice: str) -> str:
    """`auto` as a process that already runs where it will (`predict`, a Serve replica) means
    it: cuda when this process sees a GPU, else cpu. The job decides for its actors instead
    (`jobs.common.ray_startup.choose_device`)."""
    if choice != "auto":
        return choice
    return "cuda" if torch.cuda.is_available() else "cpu"


class ReplicaConfig(Protocol):
    """What `ReplicaSpec.of` reads off a command's config (`ModelOptions` with storage options)."""

    @property
    def weights_source(self) -> str: ...
    @property
    def weights_sha256(self) -> str | None: ...
    @property
    def working_size(self) -> Size | None: ...

    @property
    def s3(self) -> S3Options: ...

    variant: str
    backend: Backend
    onnx_cache: str | None
    engine_cache: str | None


@dataclass(frozen=True)
class ReplicaSpec:
    """Which model a replica runs, and how: made once from a command's config (`of`) and handed
    whole to the job's inference actors, `birefnet predict` and the service's replicas, so a
    misspelt or missing option fails where the spec is made, not when an actor starts on the
    cluster. Frozen and plain, so it pickles to Ray workers as it is."""

    weights: str
    variant: str
    device: str
    dtype: str
    s3: S3Options
    size: Size | None = None
    sha256: str | None = None
    backend: Backend = "torch"
    onnx_cache: str | None = None
    engine_cache: str | None = None
    batch_size: int = 4
    cpu_threads: int | None = None
    compile: bool = False
    compile_scope: Literal["model", "backbone"] = "model"
    cuda_graphs: bool = False
    tf32: bool = False
    channels_last: bool = False

    @classmethod
    def of(
        cls,
        config: ReplicaConfig,
        *,
        device: str,
        dtype: str,
        batch_size: int,
        cpu_threads: int | None = None,
        compile: bool = False,
        compile_scope: Literal["model", "backbone"] = "model",
        cuda_graphs: bool = False,
        tf32: bool = False,
        channels_last: bool = False,
    ) -> ReplicaSpec:
        """The spec of ``config``'s model on ``device`` in ``dtype`` (both decided by the caller)."""
        return cls(
            weights=config.weights_source, variant=config.variant, device=device, dtype=dtype, s3=config.s3,
            size=config.working_size, sha256=config.weights_sha256, backend=config.backend,
            onnx_cache=config.onnx_cache, engine_cache=config.engine_cache, batch_size=batch_size,
            cpu_threads=cpu_threads, compile=compile, compile_scope=compile_scope, cuda_graphs=cuda_graphs,
            tf32=tf32, channels_last=channels_last,
        )  # fmt: skip


def load_predictor(spec: ReplicaSpec) -> tuple[Predictor, ModelIdentity]:
    """One model replica ready to run, as the job's inference actors, `birefnet predict` and
    the online service's replicas all build it, and what the manifest says about it (`dtype`:
    what actually runs)."""
    if spec.device == "cpu":
        # Ray caps a 1-CPU actor at one thread; CPU inference should use the whole node.
        set_cpu_threads(spec.cpu_threads or os.cpu_count() or 1)
    model, identity = load_inference_model(
        spec.weights,
        variant=spec.variant,
        backend=spec.backend,
        device=spec.device,
        dtype=spec.dtype,
        s3=spec.s3,
        sha256=spec.sha256,
        onnx_cache=spec.onnx_cache,
        engine_cache=spec.engine_cache,
        batch_size=spec.batch_size,
        threads=spec.cpu_threads,
    )
    predictor = Predictor(
        model, size=spec.size, device=spec.device, dtype=spec.dtype, compile=spec.compile,
        compile_scope=spec.compile_scope, cuda_graphs=spec.cuda_graphs, tf32=spec.tf32,
        channels_last=spec.channels_last,
    )  # fmt: skip
    if spec.device == "cuda" or spec.compile or spec.cuda_graphs:
        # Compilation, autotuning and CUDA's lazy start-up belong to start-up, not to the first
        # batch (whose rows would carry minutes of infer_seconds).
        predictor.warm_up(spec.batch_size)
    return predictor, dataclasses.replace(identity, dtype=dtype_name(predictor.dtype))
