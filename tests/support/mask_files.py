"""Mask and prediction files on disk, for the tests that pair and score them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, array: np.ndarray) -> None:
    """`array` saved at `path` in the format its extension names, creating its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
