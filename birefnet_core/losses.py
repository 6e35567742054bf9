"""BiRefNet's training losses and their per-task weights, as the released recipe uses them.

Every pixel loss takes probabilities (after the sigmoid) and a ground truth in [0, 1] of the
same B x 1 x H x W shape. `BiRefNetLoss` applies the weighted pixel losses to each supervised
prediction (the side outputs are resized to the ground truth first) and adds the
gradient-reference loss. The weights per task are data (`TASK_LOSS_WEIGHTS`); the reference's
last-epochs fine-tuning switch is `finetune_weights`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
import torch.nn.functional as F

from .model.birefnet import TrainingOutputs, resize

__all__ = [
    "FINETUNE_LAST_EPOCHS",
    "PIXEL_LOSSES",
    "TASK_LOSS_WEIGHTS",
    "BiRefNetLoss",
    "LossWeights",
    "Task",
    "bce_loss",
    "contour_loss",
    "finetune_weights",
    "iou_loss",
    "mae_loss",
    "mse_loss",
    "patch_iou_loss",
    "ssim_loss",
    "structure_loss",
    "threshold_regularisation_loss",
]

Task = Literal["general", "matting", "dis", "cod", "hrsod"]
_EPS = 1e-8


def bce_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of probabilities (logs clamped at -100, as torch's BCELoss)."""
    return F.binary_cross_entropy(pred, gt)


def iou_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of 1 - soft IoU per image (the reference sums, it does not average)."""
    inter = (pred * gt).flatten(1).sum(1)
    union = gt.flatten(1).sum(1) + pred.flatten(1).sum(1) - inter
    return (1 - inter / union).sum()


def patch_iou_loss(pred: torch.Tensor, gt: torch.Tensor, window: int = 64) -> torch.Tensor:
    """`iou_loss` summed over window x window patches of the image plane.

    The reference's loop runs over the batch and channel sizes instead of H and W (so it scores
    only the top-left patch); this is the patch-wise loss its name and comment describe.
    """
    total = pred.new_zeros(())
    for y in range(0, gt.shape[2], window):
        for x in range(0, gt.shape[3], window):
            total = total + iou_loss(
                pred[:, :, y : y + window, x : x + window], gt[:, :, y : y + window, x : x + window]
            )
    return total


def mae_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(pred, gt)


def mse_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred, gt)


def threshold_regularisation_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Pushes probabilities towards 0 or 1: mean(1 - (p^2 + (p - 1)^2)); `gt` is unused."""
    return torch.mean(1 - (pred**2 + (pred - 1) ** 2))


def contour_loss(pred: torch.Tensor, gt: torch.Tensor, length_weight: float = 10.0) -> torch.Tensor:
    """Active-contour loss: weighted contour length of `pred` plus the in/out region terms."""
    dy = (pred[:, :, 1:, :] - pred[:, :, :-1, :])[:, :, 1:, :-2] ** 2
    dx = (pred[:, :, :, 1:] - pred[:, :, :, :-1])[:, :, :-2, 1:] ** 2
    length = torch.mean(torch.sqrt(torch.abs(dy + dx) + _EPS))
    region = torch.mean(pred * (gt - 1) ** 2) + torch.mean((1 - pred) * gt**2)
    return length_weight * length + region


def structure_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Boundary-weighted BCE + IoU (from MVANet), on probabilities.

    The reference passes probabilities where this loss expects logits; this takes the logit of
    `pred` so both halves see what they were written for.
    """
    weight = 1 + 5 * torch.abs(F.avg_pool2d(gt, 31, stride=1, padding=15) - gt)
    logits = torch.logit(pred, eps=1e-6)
    wbce = F.binary_cross_entropy_with_logits(logits, gt, reduction="none")
    wbce = (weight * wbce).sum((2, 3)) / weight.sum((2, 3))
    inter = (pred * gt * weight).sum((2, 3))
    union = ((pred + gt) * weight).sum((2, 3))
    return (wbce + 1 - (inter + 1) / (union - inter + 1)).mean()


def _gaussian_band(n: int, window: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    """n x n matrix whose product blurs one axis with a `window`-tap Gaussian and zero padding."""
    coords = torch.arange(window, dtype=torch.float32) - window // 2
    taps = torch.exp(-(coords**2) / (2 * sigma**2))
    taps = taps / taps.sum()
    index = torch.arange(n)
    offset = index[None, :] - index[:, None] + window // 2
    inside = (offset >= 0) & (offset < window)
    return torch.where(inside, taps[offset.clamp(0, window - 1)], 0.0).to(like)


def ssim_loss(pred: torch.Tensor, gt: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """1 - (1 + SSIM) / 2, SSIM with an 11x11 Gaussian window (sigma 1.5) and zero padding.

    The Gaussian is separable, so each blur is ``band_h @ x @ band_w.T``: the same numbers as the
    reference's 11x11 convolution, and on CPUs about 20x faster to differentiate (the backward of a
    one-channel 11x11 convolution is the slowest part of a training step there).
    """
    band_h = _gaussian_band(pred.shape[2], window, sigma, pred)
    band_w = _gaussian_band(pred.shape[3], window, sigma, pred)
    mu_p, mu_g, pp, gg, pg = band_h @ torch.stack([pred, gt, pred * pred, gt * gt, pred * gt]) @ band_w.T
    var_p, var_g, cov = pp - mu_p**2, gg - mu_g**2, pg - mu_p * mu_g
    c1, c2 = 0.01**2, 0.03**2
    ssim = ((2 * mu_p * mu_g + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_g**2 + c1) * (var_p + var_g + c2))
    return 1 - (1 + ssim.mean()) / 2


PIXEL_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "bce": bce_loss,
    "iou": iou_loss,
    "iou_patch": patch_iou_loss,
    "mae": mae_loss,
    "mse": mse_loss,
    "reg": threshold_regularisation_loss,
    "ssim": ssim_loss,
    "cnt": contour_loss,
    "structure": structure_loss,
}


@dataclass(frozen=True)
class LossWeights:
    """Weight of each pixel loss (0 switches it off) and of the gradient-reference loss."""

    pixel: Mapping[str, float]
    gradient: float = 1.0

    def __post_init__(self) -> None:
        unknown = set(self.pixel) - set(PIXEL_LOSSES)
        if unknown:
            raise ValueError(f"unknown pixel losses {sorted(unknown)}; choose from {sorted(PIXEL_LOSSES)}")


#: The reference's `lambdas_pix_last` per task (DIS5K, COD and HRSOD share one set).
_SALIENCY = {"bce": 30.0, "iou": 0.5, "ssim": 10.0}
TASK_LOSS_WEIGHTS: dict[str, LossWeights] = {
    "general": LossWeights({"bce": 30.0, "iou": 0.5, "mae": 100.0, "ssim": 10.0}),
    "matting": LossWeights({"bce": 30.0, "mae": 100.0, "ssim": 10.0}),
    "dis": LossWeights(dict(_SALIENCY)),
    "cod": LossWeights(dict(_SALIENCY)),
    "hrsod": LossWeights(dict(_SALIENCY)),
}

#: How many final epochs train with `finetune_weights` (the reference's `finetune_last_epochs`).
FINETUNE_LAST_EPOCHS: dict[str, int] = {"general": 20, "matting": 10, "dis": 40, "cod": 20, "hrsod": 20}

#: The reference's switch for those epochs: factors applied to the task's weights.
_FINETUNE_FACTORS = {
    "matting": {"mse": 0.9, "ssim": 0.9},
    "default": {"bce": 0.0, "iou": 0.5, "mae": 0.9},
}


def finetune_weights(weights: LossWeights, task: Task) -> LossWeights:
    """The weights of the last epochs: boundary-quality losses take over from BCE.

    The reference multiplies its weights by these factors at the start of every such epoch, so
    they compound (IoU falls to 0.5^N of its weight); here they are applied once.
    """
    factors = _FINETUNE_FACTORS.get(task, _FINETUNE_FACTORS["default"])
    return replace(weights, pixel={k: v * factors.get(k, 1.0) for k, v in weights.pixel.items()})


@dataclass
class BiRefNetLoss:
    """Total training loss of one `TrainingOutputs` against B x 1 x H x W ground truth in [0, 1].

    Pixel part: for each supervised prediction (side outputs resized to the ground truth),
    the weighted sum of the enabled pixel losses on its probabilities. Gradient part: BCE between
    the sigmoid of each resized gradient-reference prediction and the sigmoid of its target.
    `terms` holds the last call's weighted values per loss (summed over predictions) for logging.
    """

    weights: LossWeights
    terms: dict[str, float] = field(default_factory=dict)

    def __call__(self, outputs: TrainingOutputs, gt: torch.Tensor) -> torch.Tensor:
        # In float32 even when the model ran under bf16/fp16 autocast: SSIM's variances and the
        # log terms lose everything at 8 bits of mantissa (bf16 training otherwise hits -inf).
        with torch.autocast(gt.device.type, enabled=False):
            return self._total(outputs, gt.clamp(0, 1).float())

    def _total(self, outputs: TrainingOutputs, gt: torch.Tensor) -> torch.Tensor:
        enabled = {name: w for name, w in self.weights.pixel.items() if w}
        predictions = outputs.scaled_logits
        terms: dict[str, torch.Tensor] = {name: gt.new_zeros(()) for name in enabled}
        for logits in predictions:
            if logits.shape[2:] != gt.shape[2:]:
                logits = resize(logits, gt.shape[2:])
            probabilities = torch.sigmoid(logits.float())
            for name, weight in enabled.items():
                terms[name] = terms[name] + PIXEL_LOSSES[name](probabilities, gt) * weight
        if self.weights.gradient:
            gradient = gt.new_zeros(())
            for pred, target in zip(outputs.gradient_logits, outputs.gradient_targets, strict=True):
                pred = torch.sigmoid(resize(pred, target.shape[2:]).float())
                gradient = gradient + F.binary_cross_entropy(pred, torch.sigmoid(target.float()))
            terms["gradient"] = gradient * self.weights.gradient
        total = torch.stack(list(terms.values())).sum()
        values = torch.stack([*terms.values(), total]).detach().tolist()  # one device sync per step
        self.terms = dict(zip([*terms, "total"], values, strict=True))
        if not math.isfinite(values[-1]):
            raise FloatingPointError(f"training loss is {values[-1]} (terms {self.terms})")
        return total
