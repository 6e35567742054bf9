"""`birefnet train` / `python -m jobs.train`: fine-tune or train BiRefNet on Ray Train and print where the model went."""

from __future__ import annotations

from ..common.cli import Command
from ..common.errors import EXIT_OK
from .config import TrainConfig
from .run import run

__all__ = ["COMMAND", "main", "train"]


def train(config: TrainConfig) -> int:
    result = run(config)
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.metrics.items()}
    print(f"\nstep {result.progress['step']}, epoch {result.progress['epoch']}: {shown}")
    print(f"model:   {result.model_uri}")
    print(f"summary: {result.summary_uri}")
    return EXIT_OK


COMMAND = Command(
    name="train",
    config=TrainConfig,
    run=train,
)

main = COMMAND.main
