"""Configuration of the segmentation job: one validated pydantic model.

Loaded from a YAML/JSON file (`--config`) with command-line flags on top (`jobs.cli`); every
error names the option. The resolved config is written beside the outputs so a run can be
repeated exactly.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from birefnet_core.backend import Backend, is_onnx_file
from birefnet_core.size import Size
from birefnet_core.variants import VARIANTS
from connectors.storage import LOCAL_SCHEMES, uri_scheme

from .shared_options import CommaSeparated, RayOptions, Resolution, StorageOptions, VariantName

__all__ = ["SegmentConfig"]

OutputKind = Literal["mask", "cutout"]


class SegmentConfig(StorageOptions, RayOptions):
    """Everything a segmentation run needs; see README for the meaning of each field."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    version: Literal[1] = Field(
        1, description="Config schema version.", json_schema_extra={"file_only": True}
    )
    input: str = Field(
        ...,
        description="Local folder, s3://bucket/prefix, a .txt/.parquet list of URIs, or a folder of .tar shards.",
    )
    output: str = Field(
        ..., description="Local folder or s3://bucket/prefix for masks, cut-outs and the manifest."
    )
    variant: VariantName = Field(
        "general", description="Released BiRefNet variant (sets backbone and working size)."
    )
    weights: str | None = Field(
        None,
        description="Variant name, path or URI of the weights; 'random' for smoke tests. Default: the variant's release.",
    )
    weights_sha256: str | None = Field(None, description="Expected sha256 of the weights file.")
    resolution: Resolution | None = Field(
        None, description="Working size WxH (multiples of 32); default: the variant's."
    )
    outputs: Annotated[list[OutputKind], CommaSeparated] = Field(
        default_factory=lambda: ["mask"], description="What to write: mask, cutout."
    )
    refine_foreground: bool = Field(
        False, description="Estimate foreground colours for cut-outs (removes halos)."
    )
    batch_size: int = Field(4, ge=1, le=1024, description="Images per inference batch.")
    concurrency: tuple[int, int] = Field((1, 1), description="Inference actors: N, or min,max to autoscale.")
    num_gpus_per_actor: float | None = Field(
        None, ge=0, description="GPUs per actor (fractional allowed); default 1 on cuda, 0 on cpu."
    )
    cpu_threads: int | None = Field(
        None, ge=1, description="Torch threads of a CPU inference actor; default: all cores of its node."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="Where inference runs; auto = cuda when GPUs are there or an autoscaling cluster adds them in time, else cpu.",
    )
    gpu_wait_seconds: float = Field(
        300.0,
        ge=0,
        description="How long device auto waits on a cluster for requested GPU nodes before running on CPU.",
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto",
        description="Compute dtype; auto = float16 on cuda, bfloat16 on CPUs with AMX/AVX512-BF16, else float32.",
    )
    compile: bool = Field(False, description="torch.compile the model in each actor.")
    compile_scope: Literal["model", "backbone"] = Field(
        "model", description="What compile covers: the whole model, or the Swin backbone only."
    )
    cuda_graphs: bool = Field(
        False, description="Replay each padded batch shape as a CUDA graph (torch.compile reduce-overhead)."
    )
    tf32: bool = Field(
        False, description="Allow TF32 matmuls and convolutions for float32 on CUDA (faster, less exact)."
    )
    channels_last: bool = Field(False, description="Run convolutions in channels-last memory format.")
    backend: Backend = Field(
        "torch",
        description="What runs the model: PyTorch, or an ONNX graph in onnxruntime (CPU/CUDA) or TensorRT "
        "(onnxruntime's provider); .onnx weights are used as they are, other weights are exported once per machine.",
    )
    onnx_cache: str | None = Field(
        None, description="Local folder for weights exported to ONNX; default: ~/.cache/birefnet-ray/onnx."
    )
    engine_cache: str | None = Field(
        None,
        description="Local folder for TensorRT engines and timing caches; default: ~/.cache/birefnet-ray/tensorrt.",
    )
    tile_size: int | None = Field(
        None, ge=32, description="Scene tiles (px, multiple of 32); default: the variant's working size."
    )
    tile_overlap: int = Field(
        128, ge=0, description="Overlap of neighbouring scene tiles, blended with a Hann ramp."
    )
    chunk_size: int = Field(
        4096, ge=64, description="Scene chunk core (px): what one worker reads and holds at a time."
    )
    chunk_halo: int | None = Field(
        None, ge=0, description="Context read around each chunk core; default: the tile overlap."
    )
    bands: list[int] | None = Field(
        None, description="1-based scene bands to use as RGB, e.g. 3,2,1; default 1,2,3 (or band 1 as grey)."
    )
    band_percentiles: tuple[float, float] = Field(
        (2.0, 98.0), description="Percentiles that stretch non-8-bit bands to 0..255."
    )
    threshold: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Write scene masks as binary (0/255) at this probability; default: 8-bit probability.",
    )
    scene_min_pixels: int = Field(
        50_000_000,
        ge=1,
        description="Non-georeferenced TIFFs above this many pixels take the tiled scene path (GeoTIFFs always do).",
    )
    max_failure_fraction: float = Field(
        0.01, ge=0, le=1, description="Exit non-zero when more inputs than this fail."
    )
    max_image_pixels: int = Field(
        200_000_000, ge=1, description="Refuse larger images (decompression bombs)."
    )
    skip_existing: bool = Field(
        True, description="Skip inputs whose unchanged source already has an ok row in the manifest."
    )
    object_store_memory: int | None = Field(
        None, ge=78_643_200, description="Object store bytes for an embedded local Ray."
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs for an embedded local Ray (default: all).")
    compact_manifest: bool = Field(
        True, description="Merge the manifest's parts into a few files at the end of each run."
    )

    @field_validator("input", "output", "weights")
    @classmethod
    def _absolute_local_paths(cls, value: str | None) -> str | None:
        """Local paths become absolute here, once: workers (and `ray job submit`'s runtime
        folder) have other working directories, and the manifest records these paths."""
        if value is None or uri_scheme(value) not in LOCAL_SCHEMES or value in VARIANTS or value == "random":
            return value
        local = value.partition("://")[2] if uri_scheme(value) else value
        return os.path.abspath(os.path.expanduser(local)) + ("/" if value.endswith("/") else "")

    @field_validator("concurrency", mode="before")
    @classmethod
    def _parse_concurrency(cls, value: Any) -> Any:
        if isinstance(value, int):
            return (value, value)
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",")]
            try:
                numbers = [int(p) for p in parts]
            except ValueError:
                raise ValueError(f"expected N or MIN,MAX, got {value!r}") from None
            return (numbers[0], numbers[-1]) if len(numbers) in (1, 2) else value
        return value

    @field_validator("concurrency")
    @classmethod
    def _ordered(cls, value: tuple[int, int]) -> tuple[int, int]:
        if value[0] < 1 or value[1] < value[0]:
            raise ValueError(f"need 1 <= min <= max, got {value[0]},{value[1]}")
        return value

    @field_validator("bands", mode="before")
    @classmethod
    def _parse_bands(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return [int(v) for v in value.split(",") if v.strip()]
            except ValueError:
                raise ValueError(f"expected band numbers like 3,2,1, got {value!r}") from None
        return value

    @field_validator("bands")
    @classmethod
    def _one_or_three_bands(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (len(value) not in (1, 3) or min(value) < 1):
            raise ValueError(f"choose one or three 1-based bands, got {value}")
        return value

    @field_validator("band_percentiles", mode="before")
    @classmethod
    def _parse_percentiles(cls, value: Any) -> Any:
        return tuple(float(v) for v in value.split(",")) if isinstance(value, str) else value

    @field_validator("band_percentiles")
    @classmethod
    def _ordered_percentiles(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= value[0] < value[1] <= 100:
            raise ValueError(f"need 0 <= low < high <= 100, got {value[0]},{value[1]}")
        return value

    @field_validator("tile_size")
    @classmethod
    def _tile_multiple_of_32(cls, value: int | None) -> int | None:
        if value is not None and value % 32:
            raise ValueError(f"{value} must be a multiple of 32")
        return value

    @field_validator("outputs")
    @classmethod
    def _some_output(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("choose at least one of: mask, cutout")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _distinct_roots(self) -> SegmentConfig:
        if self.input.rstrip("/") == self.output.rstrip("/"):
            raise ValueError("output must differ from input, or masks would be listed as inputs next time")
        return self

    @model_validator(mode="after")
    def _overlap_fits_tile(self) -> SegmentConfig:
        if self.tile_size is not None and self.tile_overlap * 2 > self.tile_size:
            raise ValueError(
                f"tile_overlap {self.tile_overlap} must be at most half of tile_size {self.tile_size}"
            )
        return self

    @model_validator(mode="after")
    def _backend_options(self) -> SegmentConfig:
        if self.backend == "torch":
            if self.weights and is_onnx_file(self.weights):
                raise ValueError(
                    f"--weights {self.weights} is an ONNX file: add --backend onnxruntime or tensorrt"
                )
            return self
        torch_only = [_flag for _flag, on in (("--compile", self.compile), ("--cuda-graphs", self.cuda_graphs),
                      ("--channels-last", self.channels_last), ("--tf32", self.tf32)) if on]  # fmt: skip
        if torch_only:
            raise ValueError(f"{', '.join(torch_only)} apply to --backend torch only, not {self.backend}")
        if self.backend == "tensorrt" and self.device == "cpu":
            raise ValueError("--backend tensorrt needs a CUDA device, not --device cpu")
        return self

    @model_validator(mode="after")
    def _device_matches_gpus(self) -> SegmentConfig:
        gpus = self.num_gpus_per_actor
        if self.device == "cuda" and gpus == 0:
            raise ValueError(
                "--device cuda with --num-gpus-per-actor 0: Ray hides every GPU from an actor that reserves none"
            )
        if self.device == "cpu" and gpus:
            raise ValueError(
                f"--device cpu with --num-gpus-per-actor {gpus:g} would reserve GPUs it never uses"
            )
        if gpus is not None and gpus > 1 and not float(gpus).is_integer():
            raise ValueError(
                f"--num-gpus-per-actor {gpus:g}: Ray shares GPUs only as fractions below 1 or whole GPUs"
            )
        if self.cuda_graphs and self.device == "cpu":
            raise ValueError("--cuda-graphs needs --device cuda (or auto on a machine with GPUs)")
        return self

    @property
    def working_size(self) -> Size | None:
        """`resolution` (WIDTHxHEIGHT, as people write it) as the (height, width) birefnet_core uses."""
        return Size(height=self.resolution[1], width=self.resolution[0]) if self.resolution else None

    @property
    def scene_tile_size(self) -> int:
        if self.tile_size is not None:
            return self.tile_size
        size = VARIANTS[self.variant].size
        return min(size) if size else 1024

    @property
    def scene_halo(self) -> int:
        return self.tile_overlap if self.chunk_halo is None else self.chunk_halo

    @property
    def weights_source(self) -> str:
        return self.weights or self.variant

    def resolved_dtype(self, device: str, cpu_native_bf16: bool) -> str:
        if self.dtype != "auto":
            return self.dtype
        if device == "cuda":
            return "float16"
        return "bfloat16" if cpu_native_bf16 else "float32"
