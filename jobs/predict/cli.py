"""`birefnet predict IMAGE... -o OUT`: masks and cut-outs of local images, without Ray.

The batch job's pieces, run in this process: listing and reading (`connectors`), the model as an
inference actor builds it (`jobs.common.replicas.load_predictor`), the image path of its stages
(`jobs.common.image_prediction`) and its output layout, so a mask written here is byte for byte the
mask the job writes for the same image, weights and resolution. A bad image is reported and
skipped; the exit code is 1 when any image failed.
"""

from __future__ import annotations

import logging
import posixpath
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from birefnet_core.postprocessing import full_size_mask
from birefnet_core.precision import cpu_has_native_bf16
from birefnet_core.predictor import Predictor, group_by_shape
from birefnet_core.variants import get_variant
from connectors.images import encode_mask_png, reencode_png
from connectors.inputs import Record, read_source
from connectors.layout import OutputLayout
from connectors.listing import list_sources
from connectors.sources import Source, kind_of, named
from connectors.storage import file_info, version_tag, write_bytes_atomic

from ..common.cli import Command
from ..common.errors import EXIT_FAILURES, EXIT_OK, input_error
from ..common.image_prediction import PreparedInput, cutout_png, prepare_encoded
from ..common.replicas import ReplicaSpec, load_predictor, local_device
from .config import PredictConfig

__all__ = ["COMMAND", "main", "predict"]

log = logging.getLogger("jobs.predict")


def _given_file(uri: str, config: PredictConfig) -> Source:
    """A file named on the command line; one that does not exist becomes an error when read."""
    try:
        info = file_info(uri, config.s3)
    except FileNotFoundError:
        return Source(uri, posixpath.basename(uri), -1, "", kind_of(uri))
    return Source(uri, posixpath.basename(uri), int(info.get("size") or 0), version_tag(info), kind_of(uri))


def _is_folder(uri: str, config: PredictConfig) -> bool:
    try:
        return file_info(uri, config.s3).get("type") == "directory"
    except FileNotFoundError:
        return False


def list_inputs(config: PredictConfig) -> list[Source]:
    """Folders listed as the job lists them; files named by their own names (collision rule)."""
    sources: list[Source] = []
    files: list[Source] = []
    for spec in config.images:
        if _is_folder(spec, config):
            sources.extend(list_sources(spec, config.s3))
        else:
            files.append(_given_file(spec, config))
    return sources + named(files)


@dataclass
class _Outcome:
    ok: int = 0
    failed: int = 0


class _Writer:
    """Masks and cut-outs of one batch of records; failures are reported, never raised."""

    def __init__(self, config: PredictConfig, predictor: Predictor) -> None:
        self.config = config
        self.predictor = predictor
        self.variant = get_variant(config.variant)
        self.layout = OutputLayout(config.output)
        self.taken: set[str] = set()
        self.outcome = _Outcome()

    def _fail(self, message: str) -> None:
        self.outcome.failed += 1
        tqdm.write(f"error: {message}", file=sys.stderr)

    def _prepare(self, record: Record) -> PreparedInput | None:
        if record.error:
            self._fail(record.error)
            return None
        if record.name in self.taken:
            self._fail(f"{record.uri}: another input already wrote {record.name!r} in {self.config.output}")
            return None
        self.taken.add(record.name)
        try:
            return prepare_encoded(
                record.data or b"", record.uri, self.variant, self.config.working_size,
                self.config.max_image_pixels, self.config.box, self.config.box_margin,
            )  # fmt: skip
        except Exception as exc:  # one bad image never stops the others
            self._fail(input_error(record.uri, exc))
            return None

    def _write(self, record: Record, prepared: PreparedInput, levels: np.ndarray) -> None:
        mask = full_size_mask(levels, prepared.size, prepared.guide)
        single = self.config.output_file
        if "mask" in self.config.outputs:
            png = encode_mask_png(mask)
            self._put(single or self.layout.mask(record.name), png)
        if "cutout" in self.config.outputs:
            png = cutout_png(
                record.data or b"", record.uri, mask, self.config.refine_foreground, self.config.bgcolor
            )
            self._put(single or self.layout.cutout(record.name), png)
        self.outcome.ok += 1

    def _put(self, uri: str, png: bytes) -> None:
        data = reencode_png(png, uri) if uri == self.config.output_file else png
        write_bytes_atomic(uri, data, self.config.s3)

    def __call__(self, records: list[Record]) -> None:
        prepared = [(r, p) for r in records if (p := self._prepare(r)) is not None]
        for group in group_by_shape([p.pixels for _, p in prepared]):
            pixels = np.stack([prepared[i][1].pixels for i in group])
            levels = self.predictor.infer_batches(pixels, self.config.batch_size, quantize=True)
            for i, level in zip(group, levels, strict=True):
                record, item = prepared[i]
                try:
                    self._write(record, item, level)
                except Exception as exc:
                    self._fail(f"{record.uri}: writing outputs failed ({exc})")


def _batches(sources: list[Source], config: PredictConfig, progress: tqdm) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for source in sources:
        records = read_source(source, config.s3)
        if source.kind == "tar":
            progress.total += len(records) - 1
            progress.refresh()
        for record in records:
            batch.append(record)
            if len(batch) == config.batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


def predict(config: PredictConfig) -> int:
    """Exit codes: 0 every image done, 1 some failed (each named on stderr), 2 nothing could run."""
    sources = list_inputs(config)
    one_image = len(config.images) == 1 and len(sources) == 1 and sources[0].uri == config.images[0]
    if config.output_file and not (one_image and sources[0].kind == "file"):
        raise ValueError(
            f"-o {config.output_file} names one file, but the input is not one image file: give -o a "
            "folder to write masks/ and cutouts/ into"
        )
    device = local_device(config.device)
    dtype = config.resolved_dtype(device, cpu_has_native_bf16())
    spec = ReplicaSpec.of(
        config, device=device, dtype=dtype, batch_size=config.batch_size, cpu_threads=config.cpu_threads
    )
    predictor, identity = load_predictor(spec)
    log.info(
        "%d inputs, %s on %s in %s (weights %s)",
        len(sources), identity.backend, device, identity.dtype, identity.weights_source,
    )  # fmt: skip
    writer = _Writer(config, predictor)
    with tqdm(total=len(sources), unit="image", disable=len(sources) < 2, file=sys.stderr) as progress:
        for records in _batches(sources, config, progress):
            writer(records)
            progress.update(len(records))
    outcome = writer.outcome
    print(f"{outcome.ok} done, {outcome.failed} failed: {config.output}")
    return EXIT_FAILURES if outcome.failed else EXIT_OK


COMMAND = Command(
    name="predict",
    config=PredictConfig,
    run=predict,
)

main = COMMAND.main
