"""Batched BiRefNet inference: decoded images in, probability masks at their own size out.

The model is built once per `Predictor`; each call only moves pixels. The three stages are
public so a distributed job can run `prepare` and `finish` on CPU workers and only `infer` on the
accelerator, while `predict` chains them for in-process use. Inputs of mixed sizes are batched
per working size (`group_by_shape`, `Predictor.infer_batches`), in process and in the job alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import torch

from .box_guidance import DEFAULT_BOX_MARGIN, Box, BoxGuide
from .model import BiRefNet
from .onnx_runtime import OnnxRuntimeModel
from .postprocessing import full_size_probabilities
from .precision import resolve_compute_dtype
from .preprocessing import normalize_batch, prepare_image, to_rgb_uint8, working_size
from .quantization import quantize_probabilities
from .size import Size
from .variants import IMAGENET_MEAN, IMAGENET_STD, Variant

__all__ = ["Predictor", "PreparedImage", "group_by_shape", "padded_batch_size"]

log = logging.getLogger(__name__)

#: Working size of a predictor that has neither a variant nor a fixed size.
DEFAULT_SIZE = Size(1024, 1024)


@dataclass(frozen=True)
class PreparedImage:
    """An image resized to the network's working size, plus the size to restore it to (and,
    when a box guides it, which window of the image the pixels show)."""

    pixels: np.ndarray  # h x w x 3 uint8 at working size
    original_size: Size
    guide: BoxGuide | None = None


def group_by_shape(arrays: Sequence[np.ndarray]) -> list[list[int]]:
    """Indices of `arrays` grouped by shape, groups in order of first appearance, so that each
    group stacks into one batch and outputs can be put back in input order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, array in enumerate(arrays):
        groups.setdefault(array.shape, []).append(index)
    return list(groups.values())


def padded_batch_size(count: int, batch_size: int) -> int:
    """The batch a ragged `count` images run as: the next power of two, at most `batch_size`.

    A handful of fixed shapes (1, 2, 4, ... batch_size) is what keeps torch.compile from
    recompiling and cudnn.benchmark from re-tuning for every ragged batch.
    """
    return min(batch_size, 1 << max(count - 1, 0).bit_length())


class _Download:
    """Probabilities on their way to the host: pinned, copied without blocking the launch of the
    next batch; `result` waits for this copy only."""

    def __init__(self, probs: torch.Tensor) -> None:
        if probs.device.type != "cuda":
            self.host, self.event = probs, None
            return
        self.host = torch.empty(probs.shape, dtype=probs.dtype, pin_memory=True)
        self.host.copy_(probs, non_blocking=True)
        self.event = torch.cuda.Event()
        self.event.record()

    def result(self) -> np.ndarray:
        if self.event is not None:
            self.event.synchronize()
        return self.host.numpy()


class Predictor:
    """Runs one BiRefNet replica on `device` in `dtype`, optionally compiled / channels-last.

    `dtype` is what is asked for; `self.dtype` is what runs (see `resolve_compute_dtype`).
    bfloat16 has float32's range, so the weights themselves are converted and the whole network,
    residual stream included, runs in it (on 2 AVX512-BF16 cores 10% faster than autocast, which
    re-casts every weight on every forward); float16 runs under autocast. `size` fixes the working
    size, overriding the variant's. The Predictor owns `model`: it moves and converts it in place.

    On CUDA, batches are padded to a few fixed sizes (`padded_batch_size`), uploads go through
    pinned memory on a side stream, downloads are non-blocking and overlap the next batch, and a
    batch that runs out of memory is split in half and retried, the smaller size then kept.

    `model` may also be an exported graph in onnxruntime (`OnnxRuntimeModel`, backends
    `onnxruntime` and `tensorrt`): it runs at the precision it was exported in, and the PyTorch
    options (dtype, compile, channels-last) do not apply to it.
    """

    def __init__(
        self,
        model: BiRefNet | OnnxRuntimeModel,
        *,
        variant: Variant | None = None,
        size: Size | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        compile: bool = False,
        compile_scope: Literal["model", "backbone"] = "model",
        cuda_graphs: bool = False,
        channels_last: bool = False,
        strict_dtype: bool = False,
        tf32: bool = False,
        pad_batches: bool | None = None,
    ) -> None:
        self.variant = variant if variant is not None else getattr(model, "variant", None)
        exported = isinstance(model, OnnxRuntimeModel)
        if exported and (compile or cuda_graphs or channels_last):
            raise ValueError("compile, cuda_graphs and channels_last apply to the torch backend only")
        if size is None and isinstance(model, OnnxRuntimeModel):
            size = model.size
        self.size = DEFAULT_SIZE if self.variant is None and size is None else size
        self.device = torch.device(device)
        #: "torch", or the exported graph's runtime.
        self.backend = model.backend if exported else "torch"
        if exported:
            self.dtype = torch.float16 if model.precision == "float16" else torch.float32
        else:
            self.dtype = resolve_compute_dtype(self.device, dtype, strict_dtype)
        self.weights_dtype = torch.bfloat16 if self.dtype == torch.bfloat16 else torch.float32
        self.channels_last = channels_last
        self.mean = self.variant.mean if self.variant else IMAGENET_MEAN
        self.std = self.variant.std if self.variant else IMAGENET_STD
        if exported:
            self.mean, self.std = model.mean or self.mean, model.std or self.std
        on_cuda = self.device.type == "cuda"
        self.pad_batches = (on_cuda or compile) if pad_batches is None else pad_batches
        #: Largest batch that fitted in memory, once one did not.
        self.max_batch: int | None = None
        self._upload_stream = None
        if on_cuda:
            # Fixed shapes make autotuning pay; TF32 changes float32 results, so only on request.
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            self._upload_stream = torch.cuda.Stream(self.device)
        if exported and model.device != self.device:
            raise ValueError(
                f"the onnxruntime session runs on {model.device}, the predictor on {self.device}"
            )
        self.model = (
            model
            if isinstance(model, OnnxRuntimeModel)
            else self._placed(model, compile, compile_scope, cuda_graphs)
        )

    def _placed(
        self, model: BiRefNet, compile: bool, compile_scope: Literal["model", "backbone"], cuda_graphs: bool
    ) -> BiRefNet:
        """The PyTorch model on this device in this dtype, channels-last and compiled if asked."""
        model = model.to(device=self.device, dtype=self.weights_dtype).eval()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if compile or cuda_graphs:
            target = model.bb if compile_scope == "backbone" else model
            target.compile(dynamic=False, mode="reduce-overhead" if cuda_graphs else None)
        return model

    def size_for(self, height: int, width: int) -> Size:
        """Working size for an image of the given size."""
        return working_size(self.variant, height, width, self.size)

    def prepare(
        self, image: Any, box: Box | None = None, box_margin: float = DEFAULT_BOX_MARGIN
    ) -> PreparedImage:
        """CPU stage: any decoded image -> uint8 RGB at working size; with a `box`, only the
        box and `box_margin` of context around it (`birefnet_core.box_guidance`)."""
        rgb = to_rgb_uint8(image)
        original = Size(*rgb.shape[:2])
        guide = BoxGuide.for_image(box, original, box_margin) if box is not None else None
        seen = guide.crop(rgb) if guide else rgb
        return PreparedImage(prepare_image(seen, self.size_for(*seen.shape[:2])), original, guide)

    def warm_up(self, batch_size: int, size: Size | None = None) -> None:
        """Run every padded batch shape once at `size` (default: the fixed working size, else 1024^2), so that
        compilation, autotuning and lazy initialisation happen here and not on the first inputs."""
        # The dynamic variant has no working size: its warm-up runs at the default one.
        size = size or self.size or (self.variant.size if self.variant else None) or DEFAULT_SIZE
        shapes = sorted({padded_batch_size(n, batch_size) for n in range(1, batch_size + 1)})
        for count in shapes if self.pad_batches else [batch_size]:
            self.infer(np.zeros((count, size.height, size.width, 3), np.uint8))

    def infer(self, pixels: np.ndarray | torch.Tensor, quantize: bool = False) -> np.ndarray:
        """Accelerator stage: B x h x w x 3 uint8 (one working size) -> B x h x w probabilities.

        float32 in [0, 1], or with `quantize` uint8 0..255 rounded on the device, which halves
        what travels back and spares the CPU stages a pass over the map.
        """
        return self.infer_batches(pixels, len(pixels), quantize=quantize)

    @torch.inference_mode()
    def infer_batches(
        self, pixels: np.ndarray | torch.Tensor, batch_size: int, quantize: bool = False
    ) -> np.ndarray:
        """`infer` for N x h x w x 3 pixels of one working size, `batch_size` at a time; N x h x w
        out, in order. Batch i+1 is uploaded and launched before batch i's result is awaited."""
        size = min(batch_size, self.max_batch or batch_size)
        results: list[np.ndarray] = []
        pending: _Download | None = None
        start = 0
        while start < len(pixels):
            chunk = pixels[start : start + size]
            rows = padded_batch_size(len(chunk), size) if self.pad_batches else len(chunk)
            try:
                download = self._launch(chunk, rows, quantize)
            except torch.OutOfMemoryError:
                if rows == 1:
                    raise
                size = self._back_off(rows)
                continue
            if pending is not None:
                results.append(pending.result())
            pending = download
            start += len(chunk)
        if pending is not None:
            results.append(pending.result())
        return np.concatenate(results) if results else np.zeros((0, *pixels.shape[1:3]), np.float32)

    def _back_off(self, size: int) -> int:
        self.max_batch = size // 2
        log.warning(
            "out of %s memory at batch %d; halving to %d for this and later batches",
            self.device,
            size,
            self.max_batch,
        )
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return self.max_batch

    def _launch(self, chunk: np.ndarray | torch.Tensor, rows: int, quantize: bool) -> _Download:
        """Upload `chunk` padded to `rows` images, run it, and start the download of its results."""
        count = len(chunk)
        batch = self._upload(chunk, rows)
        x = normalize_batch(batch, self.mean, self.std, self.weights_dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        autocast = self.dtype != self.weights_dtype and self.backend == "torch"
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=autocast):
            logits = self.model(x)
        probs = torch.sigmoid(logits[:count, 0].float())
        return _Download(quantize_probabilities(probs) if quantize else probs)

    def _upload(self, chunk: np.ndarray | torch.Tensor, rows: int) -> torch.Tensor:
        """uint8 pixels on the device, `rows` of them (copies of the last image pad a ragged batch)."""
        host = torch.as_tensor(chunk)
        if rows > len(host):
            host = torch.cat([host, host[-1:].expand(rows - len(host), *host.shape[1:])])
        if self._upload_stream is None:
            return host.to(self.device)
        host = host.pin_memory()
        # The upload does not wait for the compute stream: it overlaps the batch still running.
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self._upload_stream):
            batch = host.to(self.device, non_blocking=True)
        compute.wait_stream(self._upload_stream)
        batch.record_stream(compute)
        return batch

    def finish(
        self, probabilities: np.ndarray, original_size: Size, guide: BoxGuide | None = None
    ) -> np.ndarray:
        """CPU stage: working-size probabilities -> original-size float32 mask in [0, 1] (0
        outside the box when one guided the prediction)."""
        return full_size_probabilities(probabilities, original_size, guide)

    def predict(
        self,
        images: Sequence[Any],
        batch_size: int = 4,
        boxes: Sequence[Box | None] | None = None,
        box_margin: float = DEFAULT_BOX_MARGIN,
    ) -> list[np.ndarray]:
        """Probability masks (float32 in [0, 1]) of exactly each input's size, in input order;
        `boxes` (one per image, None for none) guide the masks of the images that have one."""
        if boxes is not None and len(boxes) != len(images):
            raise ValueError(f"{len(boxes)} boxes for {len(images)} images")
        boxes = boxes if boxes is not None else [None] * len(images)
        prepared = [self.prepare(image, box, box_margin) for image, box in zip(images, boxes, strict=True)]
        masks: list[np.ndarray | None] = [None] * len(prepared)
        for group in group_by_shape([item.pixels for item in prepared]):
            probs = self.infer_batches(np.stack([prepared[i].pixels for i in group]), batch_size)
            for i, prob in zip(group, probs, strict=True):
                masks[i] = self.finish(prob, prepared[i].original_size, prepared[i].guide)
        return cast(list[np.ndarray], masks)  # every index is in exactly one group
