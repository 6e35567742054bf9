"""Pixel windows and the chunk plan: how a scene is cut into cores (kept) and halos (context).

Windows are (y0, x0, y1, x1) tuples, plain data that pickles to Ray workers; CRS and affine maths
never enter here, so ``birefnet_core`` only ever sees pixel rectangles.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connectors.raster.gdal_env import import_rasterio

Window = tuple[int, int, int, int]
"""A pixel window (y0, x0, y1, x1): rows y0..y1-1 and columns x0..x1-1."""


def check_window(window: Window, height: int, width: int, uri: str) -> None:
    """Refuse an empty window or one reaching outside a ``height`` x ``width`` raster, naming ``uri``."""
    y0, x0, y1, x1 = window
    if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
        raise ValueError(f"{uri}: window {window} is empty or outside the {height} x {width} raster")


def rasterio_window(window: Window) -> Any:
    """``window`` as rasterio spells it: column and row offsets, then width and height."""
    y0, x0, y1, x1 = window
    return import_rasterio().windows.Window(x0, y0, x1 - x0, y1 - y0)


@dataclass(frozen=True)
class Chunk:
    """One unit of work: ``read`` is the window to segment, ``core`` the part of it to keep.

    Windows are (y0, x0, y1, x1). The halo around the core gives the model context so that
    predictions at core edges do not depend on where the scene was cut.
    """

    row: int
    col: int
    core: Window
    read: Window

    @property
    def core_in_read(self) -> Window:
        """The core relative to the read window: ``prediction[y0:y1, x0:x1]`` keeps it."""
        ry0, rx0 = self.read[0], self.read[1]
        y0, x0, y1, x1 = self.core
        return (y0 - ry0, x0 - rx0, y1 - ry0, x1 - rx0)


#: Names how `plan_chunks` places cores; part of the staging key, so chunks staged under
#: another placement are never stitched into this one's mosaic.
CHUNK_PLAN = "tile-fit-1"
#: Core edges fall on multiples of this (or of gcd(chunk_size, it)): the staged chunks' overview
#: levels then line up with the scene's, so assembly stitches them instead of recomputing.
CORE_ALIGN = 512

TilesAlong = Callable[[int], int]
"""How many model tiles a read window of n pixels takes along one axis."""


def _axis_cuts(length: int, chunk_size: int, halo: int, tiles_along: TilesAlong | None) -> list[int]:
    """Core edges along one axis, 0 first and ``length`` last.

    Without ``tiles_along``: every ``chunk_size``. With it: of the aligned edges with no core
    longer than ``chunk_size`` and as few chunks as fixed cuts make, those that need the fewest
    tiles along the axis; a dynamic programme over the aligned positions. Fixed cuts leave a thin
    last chunk whose halo and flush-to-edge last tile cost nearly as much as a full one (a 10k
    scene cut 4096 + 4096 + 1808 takes 13 tiles of 1024 per axis where 3584 + 4096 + 2320 takes
    12). Fewer tiles bought with more chunks is no bargain: every chunk reads its halo again.
    """
    if tiles_along is None or length <= chunk_size:
        return [*range(0, length, chunk_size), length]
    align = math.gcd(chunk_size, CORE_ALIGN)
    edges = [*range(0, length, align), length]
    best: dict[int, tuple[int, int, int]] = {0: (0, 0, -1)}  # edge -> (chunks, tiles, previous edge)
    for end in edges[1:]:
        options = []
        for start in edges:
            if start >= end:
                break
            if end - start > chunk_size:
                continue
            chunks, tiles, _ = best[start]
            read = min(length, end + halo) - max(0, start - halo)
            options.append((chunks + 1, tiles + tiles_along(read), start))
        best[end] = min(options)
    cuts = [length]
    while cuts[-1] > 0:
        cuts.append(best[cuts[-1]][2])
    return cuts[::-1]


def plan_chunks(
    height: int, width: int, chunk_size: int, halo: int, tiles_along: TilesAlong | None = None
) -> list[Chunk]:
    """Cut a height x width raster into chunks, row-major.

    Cores tile the raster exactly without overlap, none larger than ``chunk_size`` on a side.
    Without ``tiles_along`` core (r, c) covers rows ``[r*chunk_size, min(height, (r+1)*chunk_size))``
    and likewise columns, so the last row and column of chunks may be thin. With it, the cuts
    along each axis are chosen to need the fewest model tiles (see ``_axis_cuts``): the
    scene's cost per megapixel then no longer depends on how its size divides by the chunk.
    Either way core edges fall on multiples of ``gcd(chunk_size, CORE_ALIGN)``. ``read`` is the
    core grown by ``halo`` on every side and clipped to the raster.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"raster size must be positive, got {height} x {width}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if halo < 0:
        raise ValueError(f"halo must be >= 0, got {halo}")
    rows = _axis_cuts(height, chunk_size, halo, tiles_along)
    cols = _axis_cuts(width, chunk_size, halo, tiles_along)
    chunks = []
    for row, (y0, y1) in enumerate(itertools.pairwise(rows)):
        for col, (x0, x1) in enumerate(itertools.pairwise(cols)):
            read = (max(0, y0 - halo), max(0, x0 - halo), min(height, y1 + halo), min(width, x1 + halo))
            chunks.append(Chunk(row=row, col=col, core=(y0, x0, y1, x1), read=read))
    return chunks
