"""Batched BiRefNet inference: decoded images in, probability masks at their own size out.

The model is built once per `Predictor`; each call only moves pixels. The three stages are
public so a distributed job can run `prepare` and `finish` on CPU workers and only `infer` on the
accelerator, while `predict` chains them for in-process use. Inputs of mixed sizes are batched
per working size (`group_by_shape`, `Predictor.infer_batches`), in process and in the job alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .model import BiRefNet
from .postprocessing import resize_probabilities
from .precision import resolve_compute_dtype
from .preprocessing import normalize_batch, prepare_image, to_rgb_uint8, working_size
from .quantization import quantize_probabilities
from .size import Size
from .variants import IMAGENET_MEAN, IMAGENET_STD, Variant

__all__ = ["Predictor", "PreparedImage", "group_by_shape"]

#: Working size of a predictor that has neither a variant nor a fixed size.
DEFAULT_SIZE = Size(1024, 1024)


@dataclass(frozen=True)
class PreparedImage:
    """An image resized to the network's working size, plus the size to restore it to."""

    pixels: np.ndarray  # h x w x 3 uint8 at working size
    original_size: Size


def group_by_shape(arrays: Sequence[np.ndarray]) -> list[list[int]]:
    """Indices of `arrays` grouped by shape, groups in order of first appearance, so that each
    group stacks into one batch and outputs can be put back in input order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, array in enumerate(arrays):
        groups.setdefault(array.shape, []).append(index)
    return list(groups.values())


class Predictor:
    """Runs one BiRefNet replica on `device`, autocast to `dtype`, optionally compiled / channels-last.

    `dtype` is what is asked for; `self.dtype` is what runs (see `resolve_compute_dtype`). `size`
    fixes the working size, overriding the variant's.
    """

    def __init__(
        self,
        model: BiRefNet,
        *,
        variant: Variant | None = None,
        size: Size | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        compile: bool = False,
        channels_last: bool = False,
        strict_dtype: bool = False,
    ) -> None:
        self.variant = variant if variant is not None else getattr(model, "variant", None)
        self.size = DEFAULT_SIZE if self.variant is None and size is None else size
        self.device = torch.device(device)
        self.dtype = resolve_compute_dtype(self.device, dtype, strict_dtype)
        self.channels_last = channels_last
        self.mean = self.variant.mean if self.variant else IMAGENET_MEAN
        self.std = self.variant.std if self.variant else IMAGENET_STD
        model = model.to(self.device).eval()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._forward = torch.compile(model, dynamic=False) if compile else model

    def size_for(self, height: int, width: int) -> Size:
        """Working size for an image of the given size."""
        return working_size(self.variant, height, width, self.size)

    def prepare(self, image: Any) -> PreparedImage:
        """CPU stage: any decoded image -> uint8 RGB at working size."""
        rgb = to_rgb_uint8(image)
        original = Size(*rgb.shape[:2])
        return PreparedImage(prepare_image(rgb, self.size_for(*original)), original)

    @torch.inference_mode()
    def infer(self, pixels: np.ndarray | torch.Tensor, quantize: bool = False) -> np.ndarray:
        """Accelerator stage: B x h x w x 3 uint8 (one working size) -> B x h x w probabilities.

        float32 in [0, 1], or with `quantize` uint8 0..255 rounded on the device, which halves
        what travels back and spares the CPU stages a pass over the map.
        """
        batch = torch.as_tensor(pixels).to(self.device, non_blocking=True)
        x = normalize_batch(batch, self.mean, self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            logits = self._forward(x)
        probs = torch.sigmoid(logits.float())[:, 0]
        return (quantize_probabilities(probs) if quantize else probs).cpu().numpy()

    def infer_batches(self, pixels: np.ndarray, batch_size: int, quantize: bool = False) -> np.ndarray:
        """`infer` for N x h x w x 3 pixels of one working size, `batch_size` at a time (the last
        batch may be smaller); N x h x w out, in order."""
        return np.concatenate(
            [
                self.infer(pixels[start : start + batch_size], quantize=quantize)
                for start in range(0, len(pixels), batch_size)
            ]
        )

    def finish(self, probabilities: np.ndarray, original_size: Size) -> np.ndarray:
        """CPU stage: working-size probabilities -> original-size float32 mask in [0, 1]."""
        return resize_probabilities(probabilities, original_size)

    def predict(self, images: Sequence[Any], batch_size: int = 4) -> list[np.ndarray]:
        """Probability masks (float32 in [0, 1]) of exactly each input's size, in input order."""
        prepared = [self.prepare(image) for image in images]
        masks: list[np.ndarray | None] = [None] * len(prepared)
        for group in group_by_shape([item.pixels for item in prepared]):
            probs = self.infer_batches(np.stack([prepared[i].pixels for i in group]), batch_size)
            for i, prob in zip(group, probs, strict=True):
                masks[i] = self.finish(prob, prepared[i].original_size)
        return masks  # type: ignore[return-value]
