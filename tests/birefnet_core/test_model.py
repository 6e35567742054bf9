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
