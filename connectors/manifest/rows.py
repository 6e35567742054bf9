"""The typed row builder: the one place that says what a manifest row holds.

Job stages build a ``ManifestRow`` (images, scenes, error rows alike) and ``write_manifest_part``
turns rows into a part; a field that is not a column, or a column with no field, fails at import.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from connectors.manifest.schema import MANIFEST_SCHEMA

__all__ = ["InputRef", "ManifestRow", "RunRef"]


@dataclass(frozen=True)
class InputRef:
    """Which input a row is about: the same for an image, a tar member and a scene."""

    id: str
    source_uri: str
    relative_path: str
    source_size: int
    source_version: str


@dataclass(frozen=True)
class RunRef:
    """What every row of one run (or of one of its paths) shares."""

    run_id: str
    variant: str
    resolution: str


@dataclass(frozen=True)
class ManifestRow:
    """One manifest row; ``status`` is ``ok`` exactly when there is no ``error``."""

    input: InputRef
    run: RunRef
    error: str | None = None
    width: int | None = None
    height: int | None = None
    mask_uri: str | None = None
    cutout_uri: str | None = None
    weights_sha256: str | None = None
    weights_source: str | None = None
    dtype: str | None = None
    backend: str | None = None
    box: str | None = None
    decode_seconds: float | None = None
    infer_seconds: float | None = None
    encode_seconds: float | None = None
    mean_confidence: float | None = None
    uncertain_fraction: float | None = None
    foreground_fraction: float | None = None
    is_empty: bool | None = None
    is_full: bool | None = None
    tile_count: int | None = None
    chunk_count: int | None = None
    seam_disagreement: float | None = None
    processed_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def status(self) -> Literal["ok", "error"]:
        return "ok" if self.error is None else "error"

    def as_dict(self) -> dict[str, Any]:
        """The row keyed by column name, in schema order."""
        flat = {
            **dataclasses.asdict(self.input),
            **dataclasses.asdict(self.run),
            **{
                f.name: getattr(self, f.name)
                for f in dataclasses.fields(self)
                if f.name not in ("input", "run")
            },
            "status": self.status,
        }
        return {name: flat[name] for name in MANIFEST_SCHEMA.names}


def _columns_of_the_builder() -> set[str]:
    own = {f.name for f in dataclasses.fields(ManifestRow)} - {"input", "run"}
    nested = {f.name for f in dataclasses.fields(InputRef)} | {f.name for f in dataclasses.fields(RunRef)}
    return own | nested | {"status"}


if _columns_of_the_builder() != set(MANIFEST_SCHEMA.names):
    raise ImportError(
        f"ManifestRow and MANIFEST_SCHEMA disagree: {sorted(_columns_of_the_builder() ^ set(MANIFEST_SCHEMA.names))}"
    )
