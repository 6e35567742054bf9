"""What a listed input is: the ``Source`` row, its Arrow form, its id, and the name its outputs get.

Listings of every kind (folders, list files, Parquet lists) produce these rows, and readers on
workers consume them, so the row's shape and naming rule live apart from any one listing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from connectors.layout import output_names, plain_name

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)
TAR_EXTENSION = ".tar"
#: Files that may be scenes (GeoTIFFs, huge TIFFs, JPEG 2000, VRTs): the job reads their
#: headers before choosing a path.
SCENE_EXTENSIONS = frozenset({".tif", ".tiff", ".jp2", ".j2k", ".vrt"})
#: Images that are scenes only when huge (orthophotos as PNG or JPEG): the job reads the
#: headers of those above a size in bytes, and decodes the others as images unseen.
SCENE_IF_LARGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg"})
LIST_EXTENSIONS = frozenset({".txt", ".parquet"})

SourceKind = Literal["file", "tar"]


@dataclass(frozen=True)
class Source:
    """One listed input: an image file, or a tar shard that holds many images.

    ``relative_path`` decides where outputs go (via ``safe_output_uri``); ``version`` is the S3
    ETag or local mtime, so an incremental run can tell a changed input from a processed one.
    ``size`` is -1 (and ``version`` "") for a listed input that did not exist at listing time.
    ``name`` is where its outputs go (``connectors.layout``): set by the listing, "" when the
    collision rule gave it none; None (a source built by hand) means the plain name.
    ``box`` is the ``x0,y0,x1,y1`` box that guides its mask (from a Parquet list), "" for none.
    """

    uri: str
    relative_path: str
    size: int
    version: str
    kind: SourceKind
    name: str | None = None
    box: str = ""


#: Sources as an Arrow table, how listings travel between Ray tasks without passing the driver.
SOURCE_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("relative_path", pa.string()),
        ("size", pa.int64()),
        ("version", pa.string()),
        ("kind", pa.string()),
        ("name", pa.string()),
        ("box", pa.string()),
    ]
)


def sources_table(sources: Sequence[Source]) -> pa.Table:
    """Named sources as a table; the name column always holds strings (Ray Data turns nulls into NaN)."""
    rows = [dataclasses.asdict(s) | {"name": output_name(s)} for s in sources]
    return pa.Table.from_pylist(rows, schema=SOURCE_SCHEMA)


def source_of_row(row: Mapping[str, Any]) -> Source:
    """A Source from a table or batch row (whatever scalar types the batch format gives)."""
    return Source(
        uri=str(row["uri"]),
        relative_path=str(row["relative_path"]),
        size=int(row["size"]),
        version=str(row["version"]),
        kind="tar" if str(row["kind"]) == "tar" else "file",
        name=str(row["name"]) if row["name"] is not None else None,
        box=str(row.get("box") or ""),
    )


def item_id(uri: str) -> str:
    """Stable id of an input: the first 16 hex digits of the SHA-1 of its URI.

    Tar members are identified by ``"<shard uri>#<member>"``, so they get ids of their own.
    """
    return hashlib.sha1(uri.encode("utf-8")).hexdigest()[:16]


def extension_of(path: str) -> str:
    """Lower-case extension with its dot: the file kind as the listing sees it."""
    return posixpath.splitext(path)[1].lower()


def kind_of(uri: str) -> SourceKind:
    """A ``.tar`` is a shard of many images; anything else is one file."""
    return "tar" if extension_of(uri) == TAR_EXTENSION else "file"


def named(sources: Sequence[Source]) -> list[Source]:
    """``sources`` with their output names set by the collision rule (``connectors.layout``)."""
    names = output_names([s.relative_path for s in sources])
    return [dataclasses.replace(s, name=name or "") for s, name in zip(sources, names, strict=True)]


def output_name(source: Source) -> str:
    """Where the source's outputs go; "" when the collision rule refused it a name."""
    return plain_name(source.relative_path) if source.name is None else source.name
