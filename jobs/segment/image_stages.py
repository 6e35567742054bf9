"""The segmentation job's stages as plain batch functions (dict of arrays in, dict out).

Each stage is Ray-agnostic so it can be tested on its own; `jobs.segment` wires them into a
Ray Data pipeline. Per-input failures never raise: they become `error` rows carried to the
manifest, and no output file is written for them. A failing model or accelerator does raise:
it is the job's problem, not the inputs'.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from birefnet_core.box_guidance import DEFAULT_BOX_MARGIN, Box, BoxGuide
from birefnet_core.postprocessing import full_size_mask
from birefnet_core.predictor import group_by_shape
from birefnet_core.quality import mask_quality
from birefnet_core.runtime import set_cpu_threads
from birefnet_core.size import Size
from birefnet_core.variants import get_variant
from connectors.images import encode_mask_png
from connectors.inputs import read_source
from connectors.layout import OutputLayout
from connectors.listing import source_of_row
from connectors.manifest import InputRef, ManifestRow, RunRef, write_manifest_part
from connectors.storage import S3Options, StorageUnavailableError, write_bytes_atomic

from ..common.errors import input_error
from ..common.image_prediction import cutout_png, prepare_encoded
from ..common.replicas import ReplicaSpec, load_predictor
from .listing import DoneLookup
from .rows import (
    INFERRED_KEYS,
    MODEL_KEYS,
    NO_ERROR,
    PREPARED_KEYS,
    RECORD_KEYS,
    column_batch,
    rows_of,
    status_columns,
)

__all__ = [
    "FinishStage",
    "InferenceStage",
    "PrepareStage",
    "ReadStage",
]

log = logging.getLogger(__name__)

# Ray Data turns all-None object columns into float NaN, so "absent" is spelled with empty values.
_EMPTY_PIXELS = np.zeros((0, 0, 3), np.uint8)
_EMPTY_PROBS = np.zeros((0, 0), np.uint8)
NO_DATA = b""


class ReadStage:
    """Source rows (files or tar shards) -> one record per image, with its bytes or an error."""

    def __init__(
        self,
        s3: S3Options,
        done: DoneLookup | None = None,
        on_skipped: Callable[[int], None] | None = None,
    ) -> None:
        self.s3 = s3
        self.done = done
        self.on_skipped = on_skipped

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records, members = [], []
        for row in rows_of(batch):
            source = source_of_row(row)
            for record in read_source(source, self.s3):
                records.append(record)
                members.append(source.kind == "tar" and record.uri != source.uri and record.error is None)
        if self.done is not None and any(members):
            # Tar members are known only once their shard is read: skip the done ones here.
            done = self.done().is_done([r.id for r in records], [r.version for r in records]) & np.array(
                members
            )
            if self.on_skipped and done.any():
                self.on_skipped(int(done.sum()))
            records = [r for r, skip in zip(records, done, strict=True) if not skip]
        rows = []
        for record in records:
            row = dataclasses.asdict(record)
            row.update(data=row["data"] or NO_DATA, error=row["error"] or NO_ERROR)
            rows.append(row)
        return column_batch(rows, RECORD_KEYS)


class PrepareStage:
    """Decode, orient, crop to the row's box and resize to the working size on CPU
    (`jobs.common.image_prediction`); drops the bytes unless cut-outs need them."""

    def __init__(
        self,
        variant: str,
        size: Size | None,
        keep_bytes: bool,
        max_pixels: int,
        box_margin: float = DEFAULT_BOX_MARGIN,
    ) -> None:
        self.variant = get_variant(variant)
        self.size = size
        self.keep_bytes = keep_bytes
        self.max_pixels = max_pixels
        self.box_margin = box_margin

    def _prepare(self, row: dict[str, Any]) -> dict[str, Any]:
        prepared = prepare_encoded(
            row["data"], row["uri"], self.variant, self.size, self.max_pixels, row["box"], self.box_margin
        )
        return {"pixels": prepared.pixels, "height": prepared.size.height, "width": prepared.size.width}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        set_cpu_threads(1)  # one core per CPU task; see birefnet_core.runtime
        rows = []
        for row in rows_of(batch):
            started = time.perf_counter()
            row.update(pixels=_EMPTY_PIXELS, height=0, width=0)
            if not row["error"]:
                try:
                    row.update(self._prepare(row))
                except StorageUnavailableError:
                    raise  # the store, not this input: the job stops and a re-run resumes
                except Exception as exc:
                    row["error"] = input_error(row["uri"], exc)
            if not self.keep_bytes or row["error"]:
                row["data"] = NO_DATA
            row["decode_seconds"] = time.perf_counter() - started
            rows.append(row)
        return column_batch(rows, PREPARED_KEYS)


class InferenceStage:
    """The accelerator stage: one model replica per actor, loaded once, fed working-size pixels."""

    def __init__(self, spec: ReplicaSpec) -> None:
        self.predictor, identity = load_predictor(spec)
        self.batch_size = spec.batch_size
        self.identity = {key: getattr(identity, key) for key in MODEL_KEYS}

    def _infer(self, pixels: list[np.ndarray]) -> list[np.ndarray]:
        """uint8 probabilities, one array per entry: N x h x w for a chunk's N x h x w x 3 tiles,
        h x w for each of a group of same-size images (stacked into batches together)."""
        if pixels[0].ndim == 4:
            return [self.predictor.infer_batches(tiles, self.batch_size, quantize=True) for tiles in pixels]
        return list(self.predictor.infer_batches(np.stack(pixels), self.batch_size, quantize=True))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rows hold one image (h x w x 3) or a chunk's tiles (N x h x w x 3); images of one
        size are batched together, a chunk's tiles among themselves."""
        rows = list(rows_of(batch))
        for row in rows:
            row.update(probs=_EMPTY_PROBS, infer_seconds=0.0, **self.identity)
        pending = [i for i, row in enumerate(rows) if not row["error"]]
        chunks = [[i] for i in pending if rows[i]["pixels"].ndim == 4]
        images = [i for i in pending if rows[i]["pixels"].ndim != 4]
        groups = [[images[j] for j in group] for group in group_by_shape([rows[i]["pixels"] for i in images])]
        for indices in chunks + groups:
            started = time.perf_counter()
            try:
                outputs = self._infer([rows[i]["pixels"] for i in indices])
            except Exception as exc:
                # Decoded, working-size pixels are well-formed by now, so a failure here is the
                # model's or the accelerator's: it fails this actor (Ray retries or stops the
                # job) instead of marking a night's inputs failed. The note says what it ran on.
                exc.add_note(f"inference of {len(indices)} rows failed, first {rows[indices[0]]['uri']}")
                raise
            share = (time.perf_counter() - started) / len(indices)
            for i, probs in zip(indices, outputs, strict=True):
                rows[i].update(probs=probs, infer_seconds=share)
        # Everything travels on except the input pixels.
        keys = [k for k in rows[0] if k != "pixels"] if rows else list(INFERRED_KEYS)
        return column_batch(rows, keys)


class FinishStage:
    """Masks and cut-outs at the original size, written atomically, plus a manifest part per batch."""

    def __init__(
        self,
        output: str,
        outputs: Sequence[str],
        refine_foreground: bool,
        s3: S3Options,
        run: RunRef,
        box_margin: float = DEFAULT_BOX_MARGIN,
    ) -> None:
        self.output = output
        self.box_margin = box_margin
        self.layout = OutputLayout(output)
        self.outputs = outputs
        self.refine = refine_foreground
        self.s3 = s3
        self.run = run

    def _write_outputs(self, row: dict[str, Any]) -> dict[str, Any]:
        small = row["probs"]
        written: dict[str, Any] = {**mask_quality(small).as_dict(), "tile_count": 1, "chunk_count": 1}
        size = Size(row["height"], row["width"])
        guide = BoxGuide.for_image(Box.parse(row["box"]), size, self.box_margin) if row["box"] else None
        mask = full_size_mask(small, size, guide)
        if "mask" in self.outputs:
            uri = self.layout.mask(row["name"])
            write_bytes_atomic(uri, encode_mask_png(mask), self.s3)
            written["mask_uri"] = uri
        if "cutout" in self.outputs:
            uri = self.layout.cutout(row["name"])
            write_bytes_atomic(uri, cutout_png(row["data"], row["uri"], mask, self.refine), self.s3)
            written["cutout_uri"] = uri
        return written

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        set_cpu_threads(1)  # one core per CPU task; see birefnet_core.runtime
        manifest = []
        for row in rows_of(batch):
            started = time.perf_counter()
            error = str(row["error"]) or None
            written: dict[str, Any] = {}
            if error is None:
                try:
                    written = self._write_outputs(row)
                except StorageUnavailableError:
                    raise  # the store, not this input: the job stops and a re-run resumes
                except Exception as exc:
                    error = f"{row['uri']}: writing outputs failed ({exc})"
            manifest.append(
                ManifestRow(
                    input=InputRef(
                        row["id"], row["uri"], row["relative_path"], int(row["size"]), row["version"]
                    ),
                    run=self.run,
                    error=error,
                    width=int(row["width"]) or None,
                    height=int(row["height"]) or None,
                    decode_seconds=float(row["decode_seconds"]),
                    infer_seconds=float(row["infer_seconds"]) or None,
                    encode_seconds=time.perf_counter() - started,
                    **{key: row[key] for key in MODEL_KEYS},
                    box=str(row["box"]) or None,
                    **written,
                )
            )
        write_manifest_part(self.output, manifest, self.s3)
        return status_columns(manifest)
