"""Which three bands of a scene make the model's RGB input."""

from __future__ import annotations

from collections.abc import Sequence


def default_bands(count: int) -> list[int]:
    """1-based bands that make the 3-channel model input when none are chosen.

    One band is repeated as grey; two bands (e.g. grey + alpha, or an odd SAR pair) use band 1
    as grey, since no colour order can be guessed; three or more use bands 1-3 (RGB, RGBA,
    RGB + NIR ...). Multispectral scenes in another order (e.g. Sentinel-2's B2, B3, B4 =
    blue, green, red) should pass their bands explicitly, e.g. ``[3, 2, 1]``.
    """
    if count <= 0:
        raise ValueError(f"raster has no bands (count={count})")
    return [1, 2, 3] if count >= 3 else [1, 1, 1]


def resolve_bands(bands: Sequence[int] | None, count: int, uri: str = "raster") -> list[int]:
    """The three 1-based bands to read: ``default_bands`` for None, one band repeated, or three."""
    if bands is None:
        return default_bands(count)
    chosen = [int(b) for b in bands]
    if len(chosen) == 1:
        chosen *= 3
    if len(chosen) != 3:
        raise ValueError(f"{uri}: choose one or three bands, got {list(bands)}")
    if any(not 1 <= b <= count for b in chosen):
        raise ValueError(f"{uri}: bands {list(bands)} out of range; the raster has bands 1..{count}")
    return chosen
