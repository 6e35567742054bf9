"""`birefnet evaluate` / `python -m jobs.evaluate`: run an evaluation and print its tables."""

from __future__ import annotations

from connectors.storage import join_uri

from ..common.cli import Command
from ..common.errors import EXIT_OK, JobError
from .config import EvaluateConfig
from .evaluation import run
from .outputs import REPORT_FILES, markdown_table, problem_lines

__all__ = ["COMMAND", "evaluate", "main"]


def evaluate(config: EvaluateConfig) -> int:
    """Print the dataset table and the problems; nothing paired or nothing readable is a job error."""
    report = run(config)
    if report.datasets:
        print("\n" + markdown_table(report.datasets))
    for line in problem_lines(report):
        print(line)
    if not report.pairing.pairs:
        raise JobError(
            f"no prediction under {config.predictions} matches a ground-truth mask under "
            f"{config.gt} (files are paired by relative path without extension; see the lists above)"
        )
    if not report.scored:
        raise JobError(f"none of the {len(report.pairing.pairs)} pairs could be read")
    print(f"report: {', '.join(join_uri(config.output, name) for name in REPORT_FILES)}")
    return EXIT_OK


COMMAND = Command(
    name="evaluate",
    config=EvaluateConfig,
    run=evaluate,
)

main = COMMAND.main
