"""Configuration of the segmentation job: one validated pydantic model.

Loaded from a YAML/JSON file (`--config`) with command-line flags on top (`jobs.common.cli`); every
error names the option. The resolved config is written beside the outputs so a run can be
repeated exactly.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

from pydantic import ConfigDict, Field, field_validator, model_validator

from birefnet_core.box_guidance import DEFAULT_BOX_MARGIN
from birefnet_core.variants import VARIANTS

from ..common.options import CommaSeparated, ModelOptions, RayOptions, StorageOptions, absolute_local_path

__all__ = ["SegmentConfig"]

OutputKind = Literal["mask", "cutout"]


class SegmentConfig(ModelOptions, StorageOptions, RayOptions):
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
    outputs: Annotated[list[OutputKind], CommaSeparated] = Field(
        default_factory=lambda: cast(list[OutputKind], ["mask"]), description="What to write: mask, cutout."
    )
    refine_foreground: bool = Field(
        False, description="Estimate foreground colours for cut-outs (removes halos)."
    )
    box_margin: float = Field(
        DEFAULT_BOX_MARGIN,
        ge=0,
        le=4,
        description="Context the network sees around a guiding box (a Parquet list's box column), "
        "as a fraction of the box's size on each side.",
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
    tile_size: int | None = Field(
        None, ge=32, description="Scene tiles (px, multiple of 32); default: the variant's working size."
    )
    tile_overlap: int = Field(
        128, ge=0, description="Overlap of neighbouring scene tiles, blended with a Hann ramp."
    )
    chunk_size: int = Field(
        4096, ge=64, description="Largest scene chunk core (px): what one worker reads and holds at a time."
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
        description="Rasters above this many pixels take the tiled scene path, read window by window "
        "(GeoTIFFs, JPEG 2000 and VRTs always do).",
    )
    scene_min_bytes: int = Field(
        16 * 1024**2,
        ge=0,
        description="PNG and JPEG files at least this large are checked for the scene path (their "
        "headers are read while planning); smaller ones are always images.",
    )
    scene_context: int = Field(
        0,
        ge=0,
        description="Whole-scene context: segment each scene once at this size (px, multiple of 32) and "
        "fuse it into its tiles where they are unsure; 0 = off.",
    )
    scene_context_weight: float = Field(
        0.5, ge=0, le=1, description="How far unsure tile pixels lean on the whole-scene context."
    )
    scene_staging_max_age_hours: float = Field(
        168.0,
        gt=0,
        description="Staged scene chunks nothing wrote to for this long are swept at the start of a run.",
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

    @field_validator("input", "output")
    @classmethod
    def _absolute_local_paths(cls, value: str) -> str:
        return absolute_local_path(value) or value

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

    @field_validator("tile_size", "scene_context")
    @classmethod
    def _tile_multiple_of_32(cls, value: int | None) -> int | None:
        if value and value % 32:
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
    def scene_tile_size(self) -> int:
        if self.tile_size is not None:
            return self.tile_size
        size = VARIANTS[self.variant].size
        return min(size) if size else 1024

    @property
    def scene_halo(self) -> int:
        return self.tile_overlap if self.chunk_halo is None else self.chunk_halo
