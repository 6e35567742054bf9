import copy
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from birefnet_core import get_variant
from birefnet_core.precision import resolve_compute_dtype
from birefnet_core.predictor import Predictor, group_by_shape, padded_batch_size
from birefnet_core.size import Size
from tests.support.deterministic_weights import det_model
from tests.support.disc_images import disc_on_texture


@pytest.fixture(scope="module")
def model():
    return det_model()


def _mixed_batch() -> list:
    rgb = disc_on_texture(150, 220, 0)
    sixteen = disc_on_texture(90, 70, 1)[..., 0].astype(np.uint16) * 257
    return [
        Image.fromarray(rgb),
        Image.fromarray(rgb[:77, :53, 0]),  # L
        Image.fromarray(np.dstack([disc_on_texture(64, 40, 2), np.full((64, 40), 128, np.uint8)]), "RGBA"),
        Image.fromarray(disc_on_texture(33, 47, 3)).convert("P"),
        Image.fromarray(disc_on_texture(45, 31, 4)).convert("CMYK"),
        Image.fromarray(sixteen),  # I;16
        sixteen,  # a bare uint16 array
        np.zeros((1, 1, 3), np.uint8),
    ]


def test_mixed_sizes_and_modes_give_masks_of_each_input_size(model):
    predictor = Predictor(model, size=Size(height=64, width=96))
    images = _mixed_batch()
    assert {getattr(i, "mode", None) for i in images} >= {"RGB", "L", "RGBA", "P", "CMYK", "I;16"}
    masks = predictor.predict(images, batch_size=3)
    assert len(masks) == len(images)
    for image, mask in zip(images, masks, strict=True):
        h, w = (image.height, image.width) if hasattr(image, "height") else image.shape[:2]
        assert mask.shape == (h, w)
        assert mask.dtype == np.float32
        assert mask.min() >= 0.0 and mask.max() <= 1.0


def test_sixteen_bit_data_is_scaled_not_clipped(model):
    predictor = Predictor(model, size=Size(64, 64))
    eight = disc_on_texture(64, 64, 5)[..., 0]
    as_uint16 = Image.fromarray(eight.astype(np.uint16) * 257)
    np.testing.assert_array_equal(predictor.prepare(as_uint16).pixels, predictor.prepare(eight).pixels)


def test_stages_compose_to_predict(model):
    predictor = Predictor(model, size=Size(64, 64))
    images = [disc_on_texture(100, 80, 6), disc_on_texture(50, 120, 7)]
    prepared = [predictor.prepare(i) for i in images]
    probs = predictor.infer(np.stack([p.pixels for p in prepared]))
    assert probs.shape == (2, 64, 64)
    staged = [predictor.finish(p, item.original_size) for p, item in zip(probs, prepared, strict=True)]
    for a, b in zip(staged, predictor.predict(images), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_batching_does_not_change_results(model):
    predictor = Predictor(model, size=Size(64, 64))
    images = [disc_on_texture(70, 90, s) for s in range(3)]
    together = predictor.predict(images, batch_size=3)
    alone = predictor.predict(images, batch_size=1)
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.slow  # bfloat16 is emulated on CPUs without AVX512-BF16/AMX
def test_bfloat16_agrees_with_float32(model):
    images = [disc_on_texture(128, 160, 8), disc_on_texture(96, 96, 9)]
    fp32 = Predictor(model, size=Size(128, 128)).predict(images)
    # A model of its own: a bfloat16 Predictor converts the weights it is given in place.
    bf16_predictor = Predictor(det_model(), size=Size(128, 128), dtype="bf16", strict_dtype=True)
    assert bf16_predictor.dtype == torch.bfloat16
    bf16 = bf16_predictor.predict(images)
    for a, b in zip(fp32, bf16, strict=True):
        assert 0.05 < (a > 0.5).mean() < 0.95, "the mask must have both classes for IoU to mean anything"
        iou = np.logical_and(a > 0.5, b > 0.5).sum() / np.logical_or(a > 0.5, b > 0.5).sum()
        assert iou >= 0.99


def test_bfloat16_without_hardware_support_falls_back_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr("birefnet_core.precision.cpu_has_native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert resolve_compute_dtype(torch.device("cpu"), "bf16") == torch.float32
    assert "no native bfloat16" in caplog.text
    assert resolve_compute_dtype(torch.device("cpu"), "bf16", strict=True) == torch.bfloat16
    monkeypatch.setattr("birefnet_core.precision.cpu_has_native_bf16", lambda: True)
    assert resolve_compute_dtype(torch.device("cpu"), "bfloat16") == torch.bfloat16
    assert resolve_compute_dtype(torch.device("cuda"), "fp16") == torch.float16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_compute_dtype(torch.device("cpu"), "int8")


def test_dynamic_variant_keeps_native_size_rounded_to_32(model):
    predictor = Predictor(model, variant=get_variant("dynamic"))
    assert predictor.size_for(100, 150) == (96, 160)
    assert predictor.size_for(10, 10) == (32, 32)
    assert max(predictor.size_for(9000, 4000)) <= 2304
    masks = predictor.predict([disc_on_texture(100, 150, 10), disc_on_texture(64, 64, 11)])
    assert [m.shape for m in masks] == [(100, 150), (64, 64)]


def test_fixed_variant_size_comes_from_the_registry(model):
    predictor = Predictor(model, variant=get_variant("lite-2k"))
    assert predictor.size_for(10, 10) == (1440, 2560)
    with pytest.raises(ValueError, match="multiple of 32"):
        Predictor(model, size=Size(height=64, width=100)).size_for(10, 10)


def test_sizes_are_height_width_for_a_non_square_variant(model):
    variant = get_variant("lite-2k")  # trained at 2560 wide x 1440 high
    assert variant.size == Size(height=1440, width=2560) and variant.size.height == 1440
    predictor = Predictor(model, variant=variant)
    size = predictor.size_for(10, 10)
    assert isinstance(size, Size) and (size.height, size.width) == (1440, 2560)
    item = predictor.prepare(np.zeros((30, 20, 3), np.uint8))
    assert item.pixels.shape == (1440, 2560, 3) and item.original_size == Size(height=30, width=20)


def test_group_by_shape_groups_ragged_shapes_in_order_of_first_appearance():
    arrays = [np.zeros(shape) for shape in [(2, 3), (4, 1), (2, 3), (1,), (4, 1), (2, 3)]]
    assert group_by_shape(arrays) == [[0, 2, 5], [1, 4], [3]]
    assert group_by_shape([]) == []


def test_grouped_inference_of_ragged_sizes_keeps_input_order(model):
    # The dynamic variant keeps each input's own size, so these make three working sizes.
    predictor = Predictor(model, variant=get_variant("dynamic"))
    images = [
        disc_on_texture(h, w, seed) for seed, (h, w) in enumerate([(64, 64), (32, 96), (64, 64), (96, 32)])
    ]
    together = predictor.predict(images, batch_size=4)
    for image, mask in zip(images, together, strict=True):
        assert mask.shape == image.shape[:2]
        np.testing.assert_allclose(mask, predictor.predict([image])[0], atol=1e-5)


def test_infer_batches_equals_one_infer_per_batch(model):
    predictor = Predictor(model, size=Size(64, 64))
    pixels = np.stack([predictor.prepare(disc_on_texture(70, 90, s)).pixels for s in range(3)])
    batched = predictor.infer_batches(pixels, batch_size=2, quantize=True)
    assert batched.dtype == np.uint8 and batched.shape == (3, 64, 64)
    expected = np.concatenate(
        [predictor.infer(pixels[:2], quantize=True), predictor.infer(pixels[2:], quantize=True)]
    )
    np.testing.assert_array_equal(batched, expected)


def test_unreadable_array_shapes_are_refused(model):
    predictor = Predictor(model, size=Size(64, 64))
    with pytest.raises(ValueError, match="shape"):
        predictor.prepare(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="zero size"):
        predictor.prepare(np.zeros((0, 4, 3), np.uint8))


def test_ragged_batches_pad_to_a_few_fixed_sizes():
    assert [padded_batch_size(n, 8) for n in range(1, 9)] == [1, 2, 4, 4, 8, 8, 8, 8]
    assert [padded_batch_size(n, 6) for n in range(1, 7)] == [1, 2, 4, 4, 6, 6]


def _batch_sizes_seen(predictor: Predictor) -> list[int]:
    """Batch sizes the model is called with (hooks on a Predictor of its own model copy)."""
    seen: list[int] = []
    predictor.model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    return seen


def test_padded_batches_give_the_unpadded_results(model):
    pixels = np.stack([disc_on_texture(64, 64, s) for s in range(7)])
    plain = Predictor(model, size=Size(64, 64)).infer_batches(pixels, batch_size=4)
    padded = Predictor(copy.deepcopy(model), size=Size(64, 64), pad_batches=True)
    seen = _batch_sizes_seen(padded)
    np.testing.assert_allclose(padded.infer_batches(pixels, batch_size=4), plain, atol=1e-5)
    assert seen == [4, 4]  # 7 = 4 + 3, the 3 padded to 4
    padded.warm_up(batch_size=4)
    assert seen[2:] == [1, 2, 4]


class _Seen(Exception):
    """Stops a forward pass once its input shape is known."""


def test_the_dynamic_variant_warms_up_at_the_default_size_without_a_resolution(model):
    predictor = Predictor(copy.deepcopy(model), variant=get_variant("dynamic"))
    assert predictor.size is None

    def stop(module, args):
        raise _Seen(tuple(args[0].shape[2:]))

    predictor.model.register_forward_pre_hook(stop)
    with pytest.raises(_Seen) as seen:
        predictor.warm_up(batch_size=2)
    assert seen.value.args[0] == (1024, 1024)


def _run_out_of_memory_above(predictor: Predictor, limit: int) -> list[int]:
    """Make the model (a copy of its own) raise the allocator's OutOfMemoryError above `limit`."""
    attempts: list[int] = []

    def forward(module, args):
        attempts.append(args[0].shape[0])
        if args[0].shape[0] > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (batch {args[0].shape[0]})")

    predictor.model.register_forward_pre_hook(forward)
    return attempts


def test_out_of_memory_halves_the_batch_and_keeps_the_smaller_size(model, caplog):
    pixels = np.stack([disc_on_texture(64, 64, s) for s in range(5)])
    want = Predictor(model, size=Size(64, 64)).infer_batches(pixels, batch_size=1)
    predictor = Predictor(copy.deepcopy(model), size=Size(64, 64))
    attempts = _run_out_of_memory_above(predictor, limit=2)
    with caplog.at_level(logging.WARNING):
        got = predictor.infer_batches(pixels, batch_size=8)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert attempts == [5, 2, 2, 1]  # the 5 fail together, then run as 2 + 2 + 1
    assert predictor.max_batch == 2 and "halving" in caplog.text
    attempts.clear()
    predictor.infer_batches(pixels[:4], batch_size=8)
    assert attempts == [2, 2]  # the smaller size is kept: no second failure


def test_out_of_memory_at_batch_one_and_other_errors_are_raised(model):
    predictor = Predictor(copy.deepcopy(model), size=Size(64, 64))
    _run_out_of_memory_above(predictor, limit=0)
    with pytest.raises(torch.OutOfMemoryError):
        predictor.infer_batches(np.zeros((2, 64, 64, 3), np.uint8), batch_size=2)
    broken = Predictor(copy.deepcopy(model), size=Size(64, 64))
    broken.model.register_forward_pre_hook(
        lambda module, args: (_ for _ in ()).throw(RuntimeError("CUDA error: illegal address"))
    )
    with pytest.raises(RuntimeError, match="illegal address"):
        broken.infer_batches(np.zeros((2, 64, 64, 3), np.uint8), batch_size=2)
    assert broken.max_batch is None


def test_bfloat16_converts_the_weights_instead_of_autocasting():
    predictor = Predictor(det_model(), size=Size(64, 64), dtype="bf16", strict_dtype=True)
    assert predictor.weights_dtype == torch.bfloat16
    assert {p.dtype for p in predictor.model.parameters()} == {torch.bfloat16}
    assert (
        Predictor(det_model(), size=Size(64, 64), dtype="fp16", strict_dtype=True).weights_dtype
        == torch.float32
    )


def test_out_of_memory_backs_off_from_the_padded_size_down_to_one(model):
    pixels = np.stack([disc_on_texture(64, 64, s) for s in range(3)])
    predictor = Predictor(copy.deepcopy(model), size=Size(64, 64), pad_batches=True)
    attempts = _run_out_of_memory_above(predictor, limit=1)
    assert predictor.infer_batches(pixels, batch_size=8).shape == (3, 64, 64)
    assert attempts == [4, 2, 1, 1, 1]  # 3 padded to 4, halved to 2 (fails), then 1 at a time
