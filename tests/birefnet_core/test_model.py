import json
from pathlib import Path

import numpy as np
import pytest
import torch

from birefnet_core import BACKBONES, create_model
from tests.support.deterministic_weights import det_input, det_model

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.mark.parametrize("backbone", ["swin_v1_t", "swin_v1_l"])
def test_state_dict_matches_released_checkpoint_keys(backbone):
    expected = json.loads((FIXTURES / f"keys_{backbone}.json").read_text())
    state = create_model(backbone).state_dict()
    assert list(state) == list(expected)
    for key, meta in expected.items():
        assert list(state[key].shape) == meta["shape"], key
        assert str(state[key].dtype).removeprefix("torch.") == meta["dtype"], key


def test_numerical_parity_with_reference_logits():
    model = det_model("swin_v1_t")
    with torch.inference_mode():
        logits = model(det_input(batch=1, h=256, w=256, seed=1))
    reference = np.load(FIXTURES / "logits_swin_v1_t_1x256x256_s1.npy")
    assert logits.shape == (1, 1, 256, 256)
    assert np.abs(logits.numpy() - reference).max() <= 1e-3


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_maps_any_multiple_of_32_to_logits_of_input_size(backbone):
    model = create_model(backbone)
    assert not model.training
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 1, 64, 96)
    assert torch.isfinite(out).all()


def test_rejects_sizes_that_are_not_multiples_of_32():
    with pytest.raises(ValueError, match="divisible by 32"):
        create_model("swin_v1_t")(torch.randn(1, 3, 64, 80))


def test_unknown_backbone_lists_the_valid_ones():
    with pytest.raises(KeyError, match="swin_v1_t"):
        create_model("resnet50")


#: What the reference's BiRefNet (swin_v1_t, its default config: ms_supervision, out_ref, no
#: auxiliary classification) returns in training mode for a 2 x 3 x 256 x 256 batch, read off
#: models/birefnet.py: [([gdt_preds, gdt_labels], scaled_preds), class_preds_list].
REFERENCE_TRAINING_SHAPES_SWIN_V1_T_2x256 = {
    "scaled_preds": [(2, 1, 8, 8), (2, 1, 16, 16), (2, 1, 32, 32), (2, 1, 256, 256)],
    "gdt_preds": [(2, 1, 8, 8), (2, 1, 16, 16), (2, 1, 32, 32)],
    "gdt_labels": [(2, 1, 256, 256)] * 3,
    "class_preds": [None],
}


def test_training_forward_returns_what_the_reference_supervises():
    model = create_model("swin_v1_t").train()
    out = model(torch.randn(2, 3, 256, 256))
    reference = REFERENCE_TRAINING_SHAPES_SWIN_V1_T_2x256
    assert [tuple(p.shape) for p in out.scaled_logits] == reference["scaled_preds"]
    assert [tuple(p.shape) for p in out.gradient_logits] == reference["gdt_preds"]
    assert [tuple(p.shape) for p in out.gradient_targets] == reference["gdt_labels"]
    assert reference["class_preds"] == [None]  # no classification head in any release
    out.logits.mean().backward()
    assert model.decoder.conv_out1[0].weight.grad is not None
