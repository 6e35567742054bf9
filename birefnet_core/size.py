"""The one spelling of an image size inside birefnet_core: (height, width), the order of array shapes.

People write sizes as WIDTHxHEIGHT; that order lives only at the edges (flags, config, manifest
text), which convert to `Size` once, so the maths never has to guess which side comes first.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Size"]


class Size(NamedTuple):
    """Pixels (height, width); a tuple, so it indexes and compares like `array.shape[:2]`."""

    height: int
    width: int
