import hashlib
from pathlib import Path

import fsspec
import pytest
import torch
from safetensors.torch import save_file

from birefnet_core import CheckpointMismatchError, WeightsNotFoundError, create_model, load_model
from birefnet_core.weights import detect_backbone
from connectors.storage import open_input


@pytest.fixture(scope="module")
def tiny_state():
    torch.manual_seed(0)
    return create_model("swin_v1_t").state_dict()


def _ddp_fp16(state):
    return {f"module._orig_mod.{k}": (v.half() if v.is_floating_point() else v) for k, v in state.items()}


def _assert_same_weights(model, state):
    loaded = model.state_dict()
    for key, value in state.items():
        expected = value.half().float() if value.is_floating_point() else value
        assert torch.equal(loaded[key], expected), key


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_checkpoint_with_prefixes_and_float16_loads_from_a_local_path(tmp_path, tiny_state, fmt):
    path = tmp_path / f"ckpt.{fmt}"
    if fmt == "pth":
        torch.save(_ddp_fp16(tiny_state), path)
    else:
        save_file({k: v.contiguous() for k, v in _ddp_fp16(tiny_state).items()}, str(path))
    model = load_model(str(path))
    assert model.weights.backbone == "swin_v1_t"
    assert model.weights.file_format == fmt
    assert model.weights.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert next(model.parameters()).dtype == torch.float32
    assert not model.training
    _assert_same_weights(model, tiny_state)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_checkpoint_loads_from_a_memory_uri(tiny_state, fmt):
    uri = f"memory://weights/ckpt.{fmt}"
    with fsspec.open(uri, "wb") as handle:
        if fmt == "pth":
            torch.save(_ddp_fp16(tiny_state), handle)
        else:
            from safetensors.torch import save

            handle.write(save({k: v.contiguous() for k, v in _ddp_fp16(tiny_state).items()}))
    model = load_model(uri, opener=open_input)
    assert model.weights.source == uri
    _assert_same_weights(model, tiny_state)


def test_remote_uri_without_opener_says_how_to_read_it():
    with pytest.raises(ValueError, match="opener"):
        load_model("memory://weights/whatever.pth")


def test_checkpoint_of_the_other_backbone_names_both(tmp_path, tiny_state):
    path = tmp_path / "lite.pth"
    torch.save(tiny_state, path)
    with pytest.raises(CheckpointMismatchError) as err:
        load_model(str(path), variant="general")
    assert "swin_v1_t" in str(err.value) and "swin_v1_l" in str(err.value)


def test_key_mismatch_lists_missing_unexpected_and_misshaped_keys(tmp_path, tiny_state):
    state = dict(tiny_state)
    state.pop("decoder.conv_out1.0.bias")
    state["decoder.extra_head.weight"] = torch.zeros(1)
    state["decoder.lateral_block2.conv.bias"] = torch.zeros(7)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError) as err:
        load_model(str(path))
    message = str(err.value)
    assert "missing (1): decoder.conv_out1.0.bias" in message
    assert "unexpected (1): decoder.extra_head.weight" in message
    assert "mis-shaped (1): decoder.lateral_block2.conv.bias (7,) != (192,)" in message


def test_sha256_is_checked_when_given(tmp_path, tiny_state):
    path = tmp_path / "ckpt.pth"
    torch.save(tiny_state, path)
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_model(str(path), sha256=good).weights.sha256 == good
    with pytest.raises(CheckpointMismatchError, match="sha256"):
        load_model(str(path), sha256="0" * 64)


def test_not_a_checkpoint_and_missing_file_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match=r"junk\.pth"):
        load_model(str(junk))
    with pytest.raises(WeightsNotFoundError, match=r"nope\.pth"):
        load_model(str(tmp_path / "nope.pth"))


def test_backbone_is_detected_from_shapes(tiny_state):
    assert detect_backbone(tiny_state) == "swin_v1_t"
    assert detect_backbone(create_model("swin_v1_s").state_dict()) == "swin_v1_s"
    assert detect_backbone({"foo": torch.zeros(1)}) is None


def test_variant_name_resolves_through_the_hugging_face_cache(tmp_path, tiny_state, monkeypatch):
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_state.items()}, str(path))
    calls = []

    def fake_download(**kwargs):
        calls.append(kwargs)
        return str(path)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    model = load_model("lite")
    assert calls[0]["repo_id"] == "ZhengPeng7/BiRefNet_lite"
    assert calls[0]["filename"] == "model.safetensors"
    assert calls[0]["local_files_only"] is True
    assert model.variant.name == "lite" and model.variant.size == (1024, 1024)
    assert model.weights.variant == "lite"


def test_offline_variant_with_empty_cache_gives_one_clear_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as err:
        load_model("general")
    message = str(err.value)
    assert "ZhengPeng7/BiRefNet" in message and "HF_HUB_OFFLINE" in message
    assert err.value.__context__ is None
    assert "\n" not in message


def test_unreachable_hub_does_not_retry_forever(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    attempts = []

    def refuse(**kwargs):
        attempts.append(kwargs)
        raise OSError("network unreachable")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", refuse)
    with pytest.raises(WeightsNotFoundError, match="downloading it failed"):
        load_model("portrait")
    assert len(attempts) == 2  # one cache lookup, one download attempt


def test_local_path_beats_a_variant_name(tmp_path, tiny_state):
    path = Path(tmp_path / "lite.pth")
    torch.save(tiny_state, path)
    model = load_model(str(path), variant="lite")
    assert model.variant.name == "lite" and model.weights.source == str(path)


def test_random_weights_are_seeded_and_labelled():
    a = load_model("random", variant="lite")
    b = load_model("random", variant="lite")
    assert a.weights.source == "random" and a.weights.sha256 == "random"
    assert a.variant.name == "lite" and a.weights.backbone == "swin_v1_t"
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), key
