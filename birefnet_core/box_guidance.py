"""Box-guided segmentation: a box says which object is wanted, and the mask keeps to it.

BiRefNet takes no prompt, so a box guides it by choosing what it sees: the box grown by a margin
(context the network needs to tell the object from its surroundings) is cropped and segmented at
the working size, and the crop's mask is pasted back into a full-size mask that is 0 outside the
box, as the reference's box-guided demo does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from .size import Size

if TYPE_CHECKING:
    import torch

#: An image as an array (H x W x C) or, channels first, as a torch tensor (C x H x W).
Pixels = TypeVar("Pixels", np.ndarray, "torch.Tensor")

__all__ = ["DEFAULT_BOX_MARGIN", "Box", "BoxGuide"]

#: Context kept around a box on each side, as a fraction of the box's width and height.
DEFAULT_BOX_MARGIN = 0.1


@dataclass(frozen=True)
class Box:
    """Pixel edges in the (EXIF-oriented) image: columns x0 <= x < x1, rows y0 <= y < y1."""

    x0: int
    y0: int
    x1: int
    y1: int

    def __post_init__(self) -> None:
        if min(self.x0, self.y0) < 0 or self.x1 <= self.x0 or self.y1 <= self.y0:
            raise ValueError(f"box {self} is empty or negative: expected 0 <= x0 < x1 and 0 <= y0 < y1")

    @classmethod
    def parse(cls, value: str | Sequence[float]) -> Box:
        """``"x0,y0,x1,y1"`` (or four numbers); fractional edges are rounded outwards."""
        parts = value.replace(" ", "").split(",") if isinstance(value, str) else list(value)
        try:
            numbers = [float(p) for p in parts]
        except (TypeError, ValueError):
            raise ValueError(f"box {value!r} is not four numbers x0,y0,x1,y1") from None
        if len(numbers) != 4 or not all(math.isfinite(n) for n in numbers):
            raise ValueError(f"box {value!r} is not four numbers x0,y0,x1,y1")
        x0, y0, x1, y1 = numbers
        return cls(math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1))

    def __str__(self) -> str:
        return f"{self.x0},{self.y0},{self.x1},{self.y1}"

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def size(self) -> Size:
        return Size(self.height, self.width)

    @property
    def slices(self) -> tuple[slice, slice]:
        """(rows, columns) to index an H x W (x C) array with."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def clipped(self, size: Size) -> Box:
        """The part of the box inside an image of `size`; a box wholly outside it is an error."""
        if self.x0 >= size.width or self.y0 >= size.height:
            raise ValueError(f"box {self} lies outside the {size.width}x{size.height} image")
        return Box(self.x0, self.y0, min(self.x1, size.width), min(self.y1, size.height))


@dataclass(frozen=True)
class BoxGuide:
    """A box inside one image, and the window around it that the network sees."""

    box: Box
    window: Box
    image_size: Size

    @classmethod
    def for_image(cls, box: Box, image_size: Size, margin: float = DEFAULT_BOX_MARGIN) -> BoxGuide:
        """The box clipped to the image, grown by `margin` of its size on each side for context."""
        if margin < 0:
            raise ValueError(f"box margin must be >= 0, got {margin}")
        inner = box.clipped(image_size)
        dx, dy = round(margin * inner.width), round(margin * inner.height)
        window = Box(
            max(0, inner.x0 - dx),
            max(0, inner.y0 - dy),
            min(image_size.width, inner.x1 + dx),
            min(image_size.height, inner.y1 + dy),
        )
        return cls(inner, window, image_size)

    def crop(self, image: Pixels, channels_first: bool = False) -> Pixels:
        """The window of an H x W (x C) image, or of a C x H x W one."""
        rows, columns = self.window.slices
        return image[:, rows, columns] if channels_first else image[rows, columns]

    def paste(self, window_mask: np.ndarray) -> np.ndarray:
        """The window's mask (window-sized) as a full-size mask that is 0 outside the box."""
        if tuple(window_mask.shape[:2]) != tuple(self.window.size):
            raise ValueError(f"mask {window_mask.shape[:2]} does not match the window {self.window.size}")
        full = np.zeros(self.image_size, dtype=window_mask.dtype)
        top, left = self.box.y0 - self.window.y0, self.box.x0 - self.window.x0
        full[self.box.slices] = window_mask[top : top + self.box.height, left : left + self.box.width]
        return full
