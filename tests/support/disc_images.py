"""Images whose masks must have both classes, so that comparing two predictions (IoU) means something."""

from __future__ import annotations

import numpy as np


def disc_on_texture(height: int, width: int, seed: int) -> np.ndarray:
    """A bright disc on a textured background: height x width x 3 uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (min(height, width) / 3) ** 2
    img = rng.integers(0, 90, (height, width, 3), dtype=np.uint8)
    img[disc] = (230, 200, 40)
    return img
