"""Each loss against a value worked out by hand on a tiny tensor, and the per-task weights as data."""

from __future__ import annotations

import math

import pytest
import torch

from birefnet_core.losses import (
    TASK_LOSS_WEIGHTS,
    BiRefNetLoss,
    LossWeights,
    bce_loss,
    contour_loss,
    finetune_weights,
    iou_loss,
    mae_loss,
    mse_loss,
    patch_iou_loss,
    ssim_loss,
    structure_loss,
    threshold_regularisation_loss,
)
from birefnet_core.model.birefnet import TrainingOutputs, image_gradient


def t(values: list) -> torch.Tensor:
    """A B x 1 x H x W tensor from nested lists [batch][row][col]."""
    return torch.tensor(values, dtype=torch.float32)[:, None]


PRED, GT = t([[[0.8, 0.2]]]), t([[[1.0, 0.0]]])


def test_bce_is_the_mean_negative_log_likelihood():
    assert bce_loss(PRED, GT).item() == pytest.approx(-math.log(0.8))


def test_mae_and_mse():
    assert mae_loss(PRED, GT).item() == pytest.approx(0.2)
    assert mse_loss(PRED, GT).item() == pytest.approx(0.04)


def test_iou_is_summed_over_the_batch():
    pred, gt = t([[[0.5, 0.5]], [[1.0, 0.0]]]), t([[[1.0, 0.0]], [[1.0, 0.0]]])
    # image 1: intersection 0.5, union 1 + 1 - 0.5 = 1.5; image 2: a perfect match
    assert iou_loss(pred, gt).item() == pytest.approx(1 - 0.5 / 1.5)


def test_patch_iou_adds_the_loss_of_every_window():
    # windows of one pixel: [0.5] vs [1] -> 1 - 0.5 / 1; [0.2] vs [0] -> 1 - 0 / 0.2
    assert patch_iou_loss(t([[[0.5, 0.2]]]), GT, window=1).item() == pytest.approx(0.5 + 1.0)


def test_threshold_regularisation_rewards_confident_probabilities():
    assert threshold_regularisation_loss(t([[[0.5, 1.0]]]), GT).item() == pytest.approx((0.5 + 0.0) / 2)


def test_ssim_of_a_single_pixel_matches_the_closed_form():
    a, b = 0.25, 1.0
    g = [math.exp(-(x**2) / (2 * 1.5**2)) for x in range(-5, 6)]
    w = (g[5] / sum(g)) ** 2  # the only window weight that sees a 1 x 1 image (zero padding)
    mu_a, mu_b = w * a, w * b
    var_a, var_b, cov = w * a * a - mu_a**2, w * b * b - mu_b**2, w * a * b - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    ssim = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    assert ssim_loss(t([[[a]]]), t([[[b]]])).item() == pytest.approx(1 - (1 + ssim) / 2, rel=1e-5)
    same = torch.rand(1, 1, 16, 16)
    assert ssim_loss(same, same).item() == pytest.approx(0.0, abs=1e-6)


def test_contour_loss_is_weighted_length_plus_region():
    pred = t([[[0.0, 0.5, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    # the one length sample: dy at (1, 0) = 0 - 1, dx at (0, 1) = 0 - 0.5
    expected = 10 * math.sqrt(1.0 + 0.25 + 1e-8) + (1.0 + 0.5) / 9
    assert contour_loss(pred, torch.zeros_like(pred)).item() == pytest.approx(expected, rel=1e-6)


def test_structure_loss_on_one_pixel():
    w = 1 + 5 * abs(1 / 31**2 - 1)  # 31 x 31 average pool with zero padding around one pixel
    expected = -math.log(0.5) + 1 - (0.5 * w + 1) / (1.5 * w - 0.5 * w + 1)
    assert structure_loss(t([[[0.5]]]), t([[[1.0]]])).item() == pytest.approx(expected, rel=1e-5)


def test_image_gradient_is_the_normalised_5x5_laplacian_of_the_channel_mean():
    x = torch.zeros(1, 3, 7, 7)
    x[0, :, 3, 3] = 3.0  # channel mean 3 at the centre
    g = image_gradient(x)[0, 0]
    assert g[3, 3].item() == pytest.approx(3 * -24 / 48)
    assert g[1, 1].item() == pytest.approx(3 / 48) and g[3, 5].item() == pytest.approx(3 / 48)
    assert g[0, 3].item() == 0.0  # outside the 5 x 5 neighbourhood
    assert torch.allclose(image_gradient(torch.full((1, 3, 8, 8), 0.7)), torch.zeros(1, 1, 8, 8), atol=1e-6)


def _outputs(logit: float) -> TrainingOutputs:
    sides = [torch.full((1, 1, s, s), logit) for s in (1, 2, 4)]
    return TrainingOutputs(
        side_logits=sides,
        logits=torch.full((1, 1, 8, 8), logit),
        gradient_logits=[torch.zeros(1, 1, s, s) for s in (1, 2, 4)],
        gradient_targets=[torch.zeros(1, 1, 8, 8) for _ in range(3)],
    )


def test_total_loss_supervises_every_side_output_and_the_gradient_references():
    gt = torch.ones(1, 1, 8, 8)
    loss = BiRefNetLoss(LossWeights({"mae": 2.0}, gradient=0.5))
    total = loss(_outputs(0.0), gt).item()
    # four predictions at p = 0.5 against 1 (mae 0.5, weight 2), three BCE(0.5 vs sigmoid(0)) = ln 2
    assert total == pytest.approx(4 * 0.5 * 2 + 0.5 * 3 * math.log(2), rel=1e-6)
    assert loss.terms["mae"] == pytest.approx(4.0) and loss.terms["total"] == pytest.approx(total)


def test_a_non_finite_loss_is_an_error_naming_its_terms():
    with pytest.raises(FloatingPointError, match="mae"):
        BiRefNetLoss(LossWeights({"mae": 1.0}))(_outputs(float("nan")), torch.ones(1, 1, 8, 8))


def test_task_weights_are_the_reference_recipe():
    assert dict(TASK_LOSS_WEIGHTS["general"].pixel) == {"bce": 30.0, "iou": 0.5, "mae": 100.0, "ssim": 10.0}
    assert dict(TASK_LOSS_WEIGHTS["matting"].pixel) == {"bce": 30.0, "mae": 100.0, "ssim": 10.0}
    for task in ("dis", "cod", "hrsod"):
        assert dict(TASK_LOSS_WEIGHTS[task].pixel) == {"bce": 30.0, "iou": 0.5, "ssim": 10.0}
    assert all(w.gradient == 1.0 for w in TASK_LOSS_WEIGHTS.values())


def test_last_epochs_switch_from_bce_to_boundary_losses():
    general = finetune_weights(TASK_LOSS_WEIGHTS["general"], "general").pixel
    assert dict(general) == pytest.approx({"bce": 0.0, "iou": 0.25, "mae": 90.0, "ssim": 10.0})
    matting = finetune_weights(TASK_LOSS_WEIGHTS["matting"], "matting").pixel
    assert dict(matting) == pytest.approx({"bce": 30.0, "mae": 100.0, "ssim": 9.0})


def test_unknown_loss_names_are_refused():
    with pytest.raises(ValueError, match="unknown pixel losses"):
        LossWeights({"dice": 1.0})


def test_ssim_equals_the_reference_11x11_convolution_form():
    import torch.nn.functional as F

    g = torch.tensor([math.exp(-(x**2) / (2 * 1.5**2)) for x in range(-5, 6)])
    kernel = (torch.outer(g, g) / g.sum() ** 2)[None, None]
    pred, gt = torch.rand(2, 1, 17, 23), (torch.rand(2, 1, 17, 23) > 0.5).float()

    def blur(x):
        return F.conv2d(x, kernel, padding=5)

    mu_p, mu_g = blur(pred), blur(gt)
    var_p, var_g, cov = blur(pred * pred) - mu_p**2, blur(gt * gt) - mu_g**2, blur(pred * gt) - mu_p * mu_g
    ssim = ((2 * mu_p * mu_g + 1e-4) * (2 * cov + 9e-4)) / (
        (mu_p**2 + mu_g**2 + 1e-4) * (var_p + var_g + 9e-4)
    )
    assert ssim_loss(pred, gt).item() == pytest.approx(1 - (1 + ssim.mean().item()) / 2, abs=1e-6)


def test_the_loss_is_computed_in_float32_under_bf16_autocast():
    """bf16 training: the model runs under autocast, the loss must not (SSIM's variances underflow)."""
    torch.manual_seed(0)
    gt = (torch.rand(2, 1, 32, 32) > 0.5).float()
    outputs = _outputs(0.0)
    logits = torch.randn(2, 1, 32, 32) * 4
    outputs = TrainingOutputs(
        [logits[..., ::2, ::2]] * 3, logits, outputs.gradient_logits, outputs.gradient_targets
    )
    loss = BiRefNetLoss(TASK_LOSS_WEIGHTS["general"])
    reference = loss(outputs, gt).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = loss(outputs, gt)
    assert under_autocast.dtype == torch.float32
    assert under_autocast.item() == pytest.approx(reference, rel=1e-6)
