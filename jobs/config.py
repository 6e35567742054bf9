"""Configuration of the segmentation job: one validated pydantic model.

Loaded from a YAML/JSON file (`--config`) with command-line flags on top; every error names the
field. The resolved config is written beside the outputs so a run can be repeated exactly.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from birefnet_core.variants import VARIANTS
from connectors.storage import LOCAL_SCHEMES, S3Options, uri_scheme

__all__ = ["ConfigError", "SegmentConfig", "parse_args"]

OutputKind = Literal["mask", "cutout"]


class ConfigError(ValueError):
    """The configuration is invalid; the message names the field and the problem."""


class SegmentConfig(BaseModel):
    """Everything a segmentation run needs; see README for the meaning of each field."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    version: Literal[1] = Field(1, description="Config schema version.")
    input: str = Field(
        ...,
        description="Local folder, s3://bucket/prefix, a .txt/.parquet list of URIs, or a folder of .tar shards.",
    )
    output: str = Field(
        ..., description="Local folder or s3://bucket/prefix for masks, cut-outs and the manifest."
    )
    variant: str = Field("general", description="Released BiRefNet variant (sets backbone and working size).")
    weights: str | None = Field(
        None,
        description="Variant name, path or URI of the weights; 'random' for smoke tests. Default: the variant's release.",
    )
    weights_sha256: str | None = Field(None, description="Expected sha256 of the weights file.")
    resolution: tuple[int, int] | None = Field(
        None, description="Working size WxH (multiples of 32); default: the variant's."
    )
    outputs: list[OutputKind] = Field(
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
        "auto", description="Where inference runs; auto = cuda when the cluster has GPUs."
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto",
        description="Compute dtype; auto = float16 on cuda, bfloat16 on CPUs with AMX/AVX512-BF16, else float32.",
    )
    compile: bool = Field(False, description="torch.compile the model in each actor.")
    channels_last: bool = Field(False, description="Run convolutions in channels-last memory format.")
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
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint; credentials come from the standard AWS chain."
    )
    s3_region: str | None = Field(None, description="S3 region for request signing.")
    s3_retry_seconds: float = Field(
        120.0,
        ge=0,
        description="How long transient S3 faults (refused connections, timeouts, 5xx, throttling) are "
        "retried before the job stops with exit code 2.",
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
    ray_address: str | None = Field(
        None, description="Ray cluster address; default: RAY_ADDRESS, else an embedded local Ray."
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

    @field_validator("variant")
    @classmethod
    def _known_variant(cls, value: str) -> str:
        if value not in VARIANTS:
            raise ValueError(f"unknown variant {value!r}; choose one of {sorted(VARIANTS)}")
        return value

    @field_validator("resolution", mode="before")
    @classmethod
    def _parse_resolution(cls, value: Any) -> Any:
        if isinstance(value, int):
            value = (value, value)
        if isinstance(value, str):
            parts = value.lower().replace(",", "x").split("x")
            try:
                value = tuple(int(p) for p in parts) if len(parts) == 2 else (int(parts[0]),) * 2
            except ValueError:
                raise ValueError(f"expected WIDTHxHEIGHT or SIZE, got {value!r}") from None
        return value

    @field_validator("resolution")
    @classmethod
    def _multiple_of_32(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and (value[0] % 32 or value[1] % 32 or min(value) <= 0):
            raise ValueError(f"{value[0]}x{value[1]} must be positive multiples of 32")
        return value

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

    @field_validator("outputs", mode="before")
    @classmethod
    def _split_outputs(cls, value: Any) -> Any:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

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

    @property
    def s3(self) -> S3Options:
        return S3Options(
            endpoint_url=self.s3_endpoint_url, region=self.s3_region, retry_seconds=self.s3_retry_seconds
        )

    def resolved_dtype(self, device: str, cpu_native_bf16: bool) -> str:
        if self.dtype != "auto":
            return self.dtype
        if device == "cuda":
            return "float16"
        return "bfloat16" if cpu_native_bf16 else "float32"


_FLAGS: dict[str, dict[str, Any]] = {
    "input": {},
    "output": {},
    "variant": {},
    "weights": {},
    "weights_sha256": {},
    "resolution": {},
    "outputs": {},
    "refine_foreground": {"action": argparse.BooleanOptionalAction},
    "batch_size": {"type": int},
    "concurrency": {},
    "num_gpus_per_actor": {"type": float},
    "cpu_threads": {"type": int},
    "device": {},
    "dtype": {},
    "compile": {"action": argparse.BooleanOptionalAction},
    "channels_last": {"action": argparse.BooleanOptionalAction},
    "tile_size": {"type": int},
    "tile_overlap": {"type": int},
    "chunk_size": {"type": int},
    "chunk_halo": {"type": int},
    "bands": {},
    "band_percentiles": {},
    "threshold": {"type": float},
    "scene_min_pixels": {"type": int},
    "s3_endpoint_url": {},
    "s3_region": {},
    "s3_retry_seconds": {"type": float},
    "max_failure_fraction": {"type": float},
    "max_image_pixels": {"type": int},
    "skip_existing": {"action": argparse.BooleanOptionalAction},
    "ray_address": {},
    "object_store_memory": {"type": int},
    "num_cpus": {"type": int},
    "compact_manifest": {"action": argparse.BooleanOptionalAction},
}


def _load_file(path: str) -> dict[str, Any]:
    text = Path(path).read_text()
    data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def describe_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"] if not isinstance(p, int)) or "config"
        lines.append(f"  {field}: {item['msg'].removeprefix('Value error, ')}")
    return "invalid configuration:\n" + "\n".join(lines)


def build_config(values: dict[str, Any]) -> SegmentConfig:
    try:
        return SegmentConfig(**values)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def parse_args(argv: list[str] | None = None) -> SegmentConfig:
    """Flags override the `--config` file; unknown keys in either are errors."""
    parser = argparse.ArgumentParser(
        prog="python -m jobs.segment", description="Segment images with BiRefNet on Ray."
    )
    parser.add_argument("--config", help="YAML or JSON file with any of the settings below")
    for name, options in _FLAGS.items():
        field = SegmentConfig.model_fields[name]
        parser.add_argument(
            f"--{name.replace('_', '-')}", dest=name, default=None, help=field.description, **options
        )
    args = parser.parse_args(argv)
    values = _load_file(args.config) if args.config else {}
    values.update({k: v for k, v in vars(args).items() if k != "config" and v is not None})
    return build_config(values)
