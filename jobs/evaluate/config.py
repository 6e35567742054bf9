"""What an evaluation is asked to do: the validated options, also written into metrics.json."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from ..common.options import RayOptions, StorageOptions

#: ``--parallel auto`` runs on Ray Data from this many pairs on; fewer are scored in a plain loop,
#: where starting Ray (and importing torch in every worker) would cost more than it saves.
RAY_MIN_PAIRS = 100


class EvaluateConfig(StorageOptions, RayOptions):
    """Everything an evaluation needs; written into metrics.json."""

    model_config = ConfigDict(extra="forbid")

    pred: str | None = Field(None, description="Folder or URI of predicted masks (paired by relative path).")
    run: str | None = Field(
        None,
        description="Output root of a segmentation run: its manifest names the masks (instead of --pred).",
    )
    gt: str = Field(..., description="Folder or URI of ground-truth masks (DIS5K-style gt/ folders allowed).")
    output: str = Field(
        "evaluation",
        description="Where the report goes (default ./evaluation, never inside the predictions).",
    )
    dataset_name: str | None = Field(
        None, description="Name of the dataset not inside a <name>/gt/ folder; default: the gt folder's name."
    )
    parallel: Literal["auto", "local", "ray"] = Field(
        "auto", description=f"auto: Ray Data from {RAY_MIN_PAIRS} pairs on, else a local loop."
    )
    workers: int | None = Field(
        None, ge=1, description="Concurrent Ray tasks (and CPUs of an embedded Ray); default: all CPUs."
    )
    hce: bool = Field(True, description="Compute the human correction effort (slowest measure).")

    @model_validator(mode="after")
    def _one_prediction_source(self) -> EvaluateConfig:
        if (self.pred is None) == (self.run is None):
            raise ValueError(
                "give exactly one of --pred (a folder of masks) and --run (a segmentation output)"
            )
        return self

    @property
    def predictions(self) -> str:
        return self.pred if self.pred is not None else str(self.run)
