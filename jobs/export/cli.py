"""`birefnet export` / `python -m jobs.export`: write BiRefNet as an ONNX file and say where it went."""

from __future__ import annotations

import hashlib

from birefnet_core.onnx_export import export_onnx
from birefnet_core.weights import load_model
from connectors.storage import open_input, write_bytes_atomic

from ..common.cli import Command
from ..common.errors import EXIT_OK
from .config import ExportConfig

__all__ = ["COMMAND", "export", "main"]


def export(config: ExportConfig) -> int:
    model = load_model(
        config.weights_source,
        variant=config.variant,
        sha256=config.weights_sha256,
        opener=lambda uri: open_input(uri, config.s3),
    )
    data = export_onnx(model, working_size=config.working_size, settings=config.settings)
    write_bytes_atomic(config.output, data, config.s3)
    print(f"{config.output}: {len(data) / 1e6:.1f} MB, sha256 {hashlib.sha256(data).hexdigest()}")
    return EXIT_OK


COMMAND = Command(
    name="export",
    config=ExportConfig,
    run=export,
)

main = COMMAND.main
