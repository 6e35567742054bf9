"""Chunk planning that fits the model's tiles: the fewest tiles, cores still exact and aligned."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from connectors.raster.windows import CORE_ALIGN, plan_chunks


def tiles_along(tile: int, overlap: int):
    """An independent oracle of birefnet_core's tile count along one axis."""
    return lambda n: max(1, math.ceil((n - overlap) / (tile - overlap)))


def axis_tiles(cuts: list[int], length: int, halo: int, count) -> int:
    return sum(count(min(length, b + halo) - max(0, a - halo)) for a, b in itertools.pairwise(cuts))


def cuts_of(chunks, axis: int) -> list[int]:
    starts = sorted({c.core[axis] for c in chunks})
    return [*starts, max(c.core[axis + 2] for c in chunks)]


def test_a_10k_scene_needs_fewer_tiles_than_fixed_cuts_in_as_many_chunks() -> None:
    count = tiles_along(1024, 128)
    fixed = plan_chunks(10_000, 10_000, 4096, 128)
    fitted = plan_chunks(10_000, 10_000, 4096, 128, count)
    assert axis_tiles(cuts_of(fixed, 0), 10_000, 128, count) == 13  # 4096 + 4096 + 1808
    assert axis_tiles(cuts_of(fitted, 0), 10_000, 128, count) == 12
    assert len(fitted) == len(fixed) == 9


@pytest.mark.parametrize(
    ("length", "chunk", "halo", "tile", "overlap"),
    [
        (5_000, 2048, 128, 1024, 128),
        (4_800, 2048, 128, 1024, 128),
        (2_900, 1024, 64, 512, 64),
        (777, 256, 0, 96, 16),
    ],
)
def test_fitted_cuts_need_the_fewest_tiles_of_any_aligned_cuts_with_as_few_chunks(
    length: int, chunk: int, halo: int, tile: int, overlap: int
) -> None:
    count = tiles_along(tile, overlap)
    plan = plan_chunks(length, 64, chunk, halo, count)
    found = axis_tiles(cuts_of(plan, 0), length, halo, count)
    fewest_chunks = math.ceil(length / chunk)
    assert len(plan) == fewest_chunks
    align = math.gcd(chunk, CORE_ALIGN)
    inner = range(align, length, align)
    every_aligned_plan = ([0, *picked, length] for picked in itertools.combinations(inner, fewest_chunks - 1))
    best = min(
        axis_tiles(cuts, length, halo, count)
        for cuts in every_aligned_plan
        if all(b - a <= chunk for a, b in itertools.pairwise(cuts))
    )
    assert found == best
    assert found <= axis_tiles(cuts_of(plan_chunks(length, 64, chunk, halo), 0), length, halo, count)


@pytest.mark.parametrize(("height", "width"), [(10_000, 7_000), (4_000, 4_000), (9_000, 300), (1, 1)])
def test_fitted_cores_tile_the_raster_exactly_aligned_and_bounded(height: int, width: int) -> None:
    chunk, halo = 4096, 128
    chunks = plan_chunks(height, width, chunk, halo, tiles_along(1024, 128))
    hits = np.zeros((height, width), np.int8)
    for c in chunks:
        y0, x0, y1, x1 = c.core
        hits[y0:y1, x0:x1] += 1
        assert y1 - y0 <= chunk and x1 - x0 <= chunk
        assert y0 % CORE_ALIGN == 0 and x0 % CORE_ALIGN == 0
        assert c.read == (max(0, y0 - halo), max(0, x0 - halo), min(height, y1 + halo), min(width, x1 + halo))
    assert (hits == 1).all()
    assert [(c.row, c.col) for c in chunks] == sorted((c.row, c.col) for c in chunks)


def test_a_scene_no_larger_than_a_chunk_stays_one_chunk() -> None:
    (only,) = plan_chunks(4000, 4096, 4096, 128, tiles_along(1024, 128))
    assert only.core == (0, 0, 4000, 4096)
