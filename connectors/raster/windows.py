"""Pixel windows and the chunk plan: how a scene is cut into cores (kept) and halos (context).

Windows are (y0, x0, y1, x1) tuples, plain data that pickles to Ray workers; CRS and affine maths
never enter here, so ``birefnet_core`` only ever sees pixel rectangles.
"""

from __future__ import annotations

import math
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


def plan_chunks(height: int, width: int, chunk_size: int, halo: int) -> list[Chunk]:
    """Cut a height x width raster into chunks, row-major.

    Cores tile the raster exactly without overlap: core (r, c) covers rows
    ``[r*chunk_size, min(height, (r+1)*chunk_size))`` and likewise columns, so the last row
    and column of chunks may be smaller. ``read`` is the core grown by ``halo`` on every side
    and clipped to the raster. The number of chunks is
    ``ceil(height / chunk_size) * ceil(width / chunk_size)``.

    Choose ``chunk_size`` as a multiple of ``MASK_BLOCK`` (512) so mask writes stay aligned
    with the output's tiles.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"raster size must be positive, got {height} x {width}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if halo < 0:
        raise ValueError(f"halo must be >= 0, got {halo}")
    chunks = []
    for row in range(math.ceil(height / chunk_size)):
        for col in range(math.ceil(width / chunk_size)):
            y0, x0 = row * chunk_size, col * chunk_size
            y1, x1 = min(height, y0 + chunk_size), min(width, x0 + chunk_size)
            read = (max(0, y0 - halo), max(0, x0 - halo), min(height, y1 + halo), min(width, x1 + halo))
            chunks.append(Chunk(row=row, col=col, core=(y0, x0, y1, x1), read=read))
    return chunks
