"""Options every command shares: how to reach S3 and which Ray to join.

Config models inherit these, so each option is declared, described and validated once and the
command line (`jobs.common.cli`) shows them in their own groups.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, field_validator, model_validator

from birefnet_core.backend import Backend, is_onnx_file
from birefnet_core.size import Size
from birefnet_core.variants import VARIANTS
from connectors.storage import LOCAL_SCHEMES, S3Options, uri_scheme

__all__ = [
    "Colour",
    "CommaSeparated",
    "ModelOptions",
    "RayOptions",
    "Resolution",
    "StorageOptions",
    "VariantName",
    "WeightsOptions",
    "absolute_local_path",
]


def absolute_local_path(value: str | None) -> str | None:
    """Local paths become absolute once, in the config: workers (and `ray job submit`'s runtime
    folder) have other working directories, and the manifest records these paths. Variant
    names, 'random' and URIs stay as they are."""
    if value is None or uri_scheme(value) not in LOCAL_SCHEMES or value in VARIANTS or value == "random":
        return value
    local = value.partition("://")[2] if uri_scheme(value) else value
    return os.path.abspath(os.path.expanduser(local)) + ("/" if value.endswith("/") else "")


def _split_commas(value: Any) -> Any:
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


#: List options take `a,b,c` on the command line (lists in config files); annotate the list with it.
CommaSeparated = BeforeValidator(_split_commas)


def _parse_resolution(value: Any) -> Any:
    if isinstance(value, int):
        value = (value, value)
    if isinstance(value, str):
        parts = value.lower().replace(",", "x").split("x")
        try:
            value = tuple(int(p) for p in parts) if len(parts) == 2 else (int(parts[0]),) * 2
        except ValueError:
            raise ValueError(f"expected WIDTHxHEIGHT or SIZE, got {value!r}") from None
    return value


def _multiple_of_32(value: tuple[int, int]) -> tuple[int, int]:
    if value[0] % 32 or value[1] % 32 or min(value) <= 0:
        raise ValueError(f"{value[0]}x{value[1]} must be positive multiples of 32")
    return value


#: A working size as people write it: WIDTHxHEIGHT or one SIZE, multiples of 32; kept as (width, height).
Resolution = Annotated[tuple[int, int], BeforeValidator(_parse_resolution), AfterValidator(_multiple_of_32)]


def _parse_colour(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    hex_digits = text.removeprefix("#")
    if len(hex_digits) == 6 and all(c in "0123456789abcdefABCDEF" for c in hex_digits):
        return tuple(int(hex_digits[i : i + 2], 16) for i in (0, 2, 4))
    try:
        parts = tuple(int(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or not all(0 <= p <= 255 for p in parts):
        raise ValueError(f"expected a colour as #rrggbb or R,G,B (0-255), got {value!r}")
    return parts


#: An RGB colour as people write it: ``#rrggbb`` or ``R,G,B``; kept as three 0-255 integers.
_Level = Annotated[int, Field(ge=0, le=255)]
Colour = Annotated[tuple[_Level, _Level, _Level], BeforeValidator(_parse_colour)]


def _known_variant(value: str) -> str:
    if value not in VARIANTS:
        raise ValueError(f"unknown variant {value!r}; choose one of {sorted(VARIANTS)}")
    return value


#: The name of a registered variant (`birefnet_core.variants.VARIANTS`).
VariantName = Annotated[str, AfterValidator(_known_variant)]


class StorageOptions(BaseModel):
    """storage (S3-compatible stores)"""

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

    @property
    def s3(self) -> S3Options:
        return S3Options(
            endpoint_url=self.s3_endpoint_url, region=self.s3_region, retry_seconds=self.s3_retry_seconds
        )


class RayOptions(BaseModel):
    """Ray"""

    ray_address: str | None = Field(
        None, description="Ray cluster address; default: RAY_ADDRESS, else an embedded local Ray."
    )


class WeightsOptions(BaseModel):
    """weights"""

    variant: VariantName = Field(
        "general", description="Released BiRefNet variant (sets backbone and working size)."
    )
    weights: str | None = Field(
        None,
        description="Variant name, path or URI of the weights; 'random' for smoke tests. Default: the variant's release.",
    )
    weights_sha256: str | None = Field(None, description="Expected sha256 of the weights file.")

    @field_validator("weights")
    @classmethod
    def _absolute_weights_path(cls, value: str | None) -> str | None:
        return absolute_local_path(value)

    @property
    def weights_source(self) -> str:
        return self.weights or self.variant


class ModelOptions(WeightsOptions):
    """model (working size, precision, backend)"""

    resolution: Resolution | None = Field(
        None, description="Working size WxH (multiples of 32); default: the variant's."
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto",
        description="Compute dtype; auto = float16 on cuda, bfloat16 on CPUs with AMX/AVX512-BF16, else float32.",
    )
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

    @model_validator(mode="after")
    def _onnx_weights_need_an_onnx_backend(self) -> ModelOptions:
        if self.backend == "torch" and self.weights and is_onnx_file(self.weights):
            raise ValueError(
                f"--weights {self.weights} is an ONNX file: add --backend onnxruntime or tensorrt"
            )
        return self

    @property
    def working_size(self) -> Size | None:
        """`resolution` (WIDTHxHEIGHT, as people write it) as the (height, width) birefnet_core uses."""
        return Size(height=self.resolution[1], width=self.resolution[0]) if self.resolution else None

    def resolved_dtype(self, device: str, cpu_native_bf16: bool) -> str:
        if self.dtype != "auto":
            return self.dtype
        if device == "cuda":
            return "float16"
        return "bfloat16" if cpu_native_bf16 else "float32"
