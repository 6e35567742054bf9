"""`birefnet report` / `python -m jobs.report`: the options of a run report and its printed summary."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from ..common.cli import Command
from ..common.errors import EXIT_OK
from ..common.options import StorageOptions
from .build import build_report

__all__ = ["COMMAND", "ReportConfig", "main", "report"]


class ReportConfig(StorageOptions):
    """Which run to report on and how big the gallery is."""

    model_config = ConfigDict(extra="forbid")

    run: str = Field(..., description="The run's output root (local folder or s3://bucket/prefix).")
    output: str | None = Field(
        None, description="Where to write index.html and thumbs/; default: <run>/report."
    )
    gallery_size: int = Field(12, ge=0, description="Entries per gallery category.")
    run_id: str | None = Field(
        None, description="Report on one run only; default: the newest row of every input."
    )
    thumbnail_size: int = Field(256, ge=16, le=2048, description="Longest side of thumbnails (px).")


def report(config: ReportConfig) -> int:
    index, summary = build_report(
        config.run, config.output, config.s3, config.gallery_size, config.run_id, config.thumbnail_size
    )
    print(f"{summary.inputs} inputs: {summary.ok} ok, {summary.errors} errors")
    print(f"report: {index}")
    return EXIT_OK


COMMAND = Command(
    name="report",
    config=ReportConfig,
    run=report,
)

main = COMMAND.main
