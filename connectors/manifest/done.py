"""What a re-run may skip, as a compact index: 16 bytes per done input instead of a dict of strings.

The job hands the set of finished inputs to every read task. As a dict of id and version strings
that is ~53 MB pickled at 1M inputs; as two uint64 arrays (ids, which are 16 hex digits and so
exactly 64-bit numbers, and a 64-bit hash of each source version) it is 16 MB, and a task checks a
whole batch with one ``np.searchsorted``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectors.manifest.reading import latest_rows, read_manifest
from connectors.storage import S3Options

DONE_COLUMNS = ("id", "status", "source_version", "processed_at")

_ID_DIGITS = 16
_NULL_DIGEST = bytes(8)
_ID_PATTERN = re.compile(f"[0-9a-f]{{{_ID_DIGITS}}}")
_NOT_HEX = 255
_HEX_VALUE = np.full(256, _NOT_HEX, dtype=np.uint8)
_HEX_VALUE[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)

Strings: TypeAlias = Sequence[str] | pa.Array | pa.ChunkedArray


def _string_array(values: Strings) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values.cast(pa.string())
    return pa.array(list(values), type=pa.string())


def _bad_id(array: pa.Array) -> ValueError:
    first = next(value for value in array.to_pylist() if not _ID_PATTERN.fullmatch(value))
    return ValueError(f"input id {first!r} is not {_ID_DIGITS} lowercase hex digits")


def id_to_uint64(ids: Strings) -> np.ndarray:
    """Input ids (16 lowercase hex digits: the start of the SHA-1 of the URI) as the numbers they spell.

    Anything else raises ValueError naming the first bad id, so two different ids never map to one number.
    """
    array = _string_array(ids)
    if len(array) == 0:
        return np.empty(0, dtype=np.uint64)
    if array.null_count:
        raise ValueError(f"{array.null_count} input ids are null")
    try:
        fixed = array.cast(pa.binary(_ID_DIGITS))
    except pa.ArrowInvalid:
        raise _bad_id(array) from None
    digits = np.frombuffer(
        fixed.buffers()[1], dtype=np.uint8, count=len(fixed) * _ID_DIGITS, offset=fixed.offset * _ID_DIGITS
    )
    nibbles = _HEX_VALUE[digits]
    if (nibbles == _NOT_HEX).any():
        raise _bad_id(array)
    octets = (nibbles[0::2] << 4) | nibbles[1::2]
    return octets.view(">u8").astype(np.uint64)


def hash_versions(versions: Strings) -> np.ndarray:
    """A stable 64-bit hash of each source version: the first 8 bytes of its BLAKE2b digest (0 for null)."""
    values = versions.to_pylist() if isinstance(versions, pa.Array | pa.ChunkedArray) else list(versions)
    digests = b"".join(
        _NULL_DIGEST if value is None else hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest()
        for value in values
    )
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def _latest_ok(table: pa.Table) -> pa.Table:
    """Latest row per id, kept only where it is `ok`."""
    latest = latest_rows(table)
    return latest.filter(pc.equal(latest.column("status"), "ok"))


@dataclass(frozen=True, eq=False)
class DoneIndex:
    """Inputs whose latest manifest row is `ok`: sorted uint64 ids and their source-version hashes.

    It pickles as its two arrays (16 bytes per input), so it is cheap to ship to every task.
    """

    ids: np.ndarray
    versions: np.ndarray

    def __post_init__(self) -> None:
        for name in ("ids", "versions"):
            array = getattr(self, name)
            if not isinstance(array, np.ndarray) or array.dtype != np.uint64 or array.ndim != 1:
                raise ValueError(f"DoneIndex.{name} must be a 1-D uint64 array")
        if self.ids.shape != self.versions.shape:
            raise ValueError(f"DoneIndex has {self.ids.size} ids but {self.versions.size} versions")
        if self.ids.size > 1 and not bool(np.all(self.ids[1:] > self.ids[:-1])):
            raise ValueError("DoneIndex.ids must be sorted and unique")

    @classmethod
    def empty(cls) -> DoneIndex:
        """Nothing done: what a run without ``skip_existing`` (or a first run) uses."""
        return cls(np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.uint64))

    @classmethod
    def build(cls, table: pa.Table) -> DoneIndex:
        """Index manifest rows (any projection holding DONE_COLUMNS).

        `ok` rows without a source version are left out: no listed input can match them.
        """
        done = _latest_ok(table)
        done = done.filter(pc.is_valid(done.column("source_version")))
        # latest_rows sorts by id, and hex strings of one length sort as the numbers they spell.
        return cls(
            np.ascontiguousarray(id_to_uint64(done.column("id"))),
            np.ascontiguousarray(hash_versions(done.column("source_version"))),
        )

    @classmethod
    def load(cls, output_root: str, s3: S3Options | None = None) -> DoneIndex:
        """Index the manifest under ``output_root``, reading only DONE_COLUMNS."""
        return cls.build(read_manifest(output_root, s3, columns=DONE_COLUMNS))

    def __len__(self) -> int:
        return int(self.ids.size)

    def is_done(self, ids: Strings, versions: Strings) -> np.ndarray:
        """Per input, whether its latest row is `ok` for exactly this source version (never for a null one)."""
        keys = id_to_uint64(ids)
        listed = _string_array(versions)
        hashes = hash_versions(listed)
        if keys.shape != hashes.shape:
            raise ValueError(f"is_done got {keys.size} ids but {hashes.size} versions")
        if not len(self):
            return np.zeros(keys.size, dtype=bool)
        slots = np.minimum(np.searchsorted(self.ids, keys), self.ids.size - 1)
        known = pc.is_valid(listed).to_numpy(zero_copy_only=False)
        return (self.ids[slots] == keys) & (self.versions[slots] == hashes) & known


def completed_inputs(output_root: str, s3: S3Options | None = None) -> dict[str, str]:
    """id -> source version of every input whose latest row is `ok`: what a re-run may skip.

    The same rows ``DoneIndex.build`` indexes, as Python strings (~50 bytes per input pickled):
    kept for ad-hoc inspection and as the reference the index is tested against. Jobs should ship
    a ``DoneIndex`` to tasks instead.
    """
    done = _latest_ok(read_manifest(output_root, s3, columns=DONE_COLUMNS))
    return dict(zip(done.column("id").to_pylist(), done.column("source_version").to_pylist(), strict=True))
