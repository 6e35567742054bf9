"""Options every command shares: how to reach S3 and which Ray to join.

Config models inherit these, so each option is declared, described and validated once and the
command line (`jobs.cli`) shows them in their own groups.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field

from birefnet_core.variants import VARIANTS
from connectors.storage import S3Options

__all__ = ["CommaSeparated", "RayOptions", "Resolution", "StorageOptions", "VariantName"]


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
