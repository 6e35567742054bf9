"""`make demo`'s weights: the `lite` release through huggingface_hub, offline with a mocked hub."""

import logging

import pytest
from huggingface_hub.errors import LocalEntryNotFoundError

from birefnet_core import weights
from birefnet_core.weights import RANDOM_WEIGHTS
from jobs.demo import choose_weights


class FakeHub:
    """hf_hub_download as the hub answers it: a cache that may be empty, a network that may be down."""

    def __init__(self, tmp_path, cached: bool, reachable: bool) -> None:
        self.file = tmp_path / "model.safetensors"
        self.cached, self.reachable = cached, reachable
        self.calls: list[dict] = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        if kwargs.get("local_files_only"):
            if not self.cached:
                raise LocalEntryNotFoundError("not in the cache")
        elif not self.reachable:
            raise OSError("network unreachable")
        return str(self.file)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def install(cached: bool, reachable: bool) -> FakeHub:
        fake = FakeHub(tmp_path, cached, reachable)
        monkeypatch.setattr("huggingface_hub.hf_hub_download", fake)
        return fake

    return install


def test_downloads_the_lite_release_when_the_hub_is_reachable(hub, caplog):
    fake = hub(cached=False, reachable=True)
    with caplog.at_level(logging.WARNING):
        assert choose_weights(None).weights == str(fake.file)
    download = fake.calls[-1]
    assert download["repo_id"] == "ZhengPeng7/BiRefNet_lite" and download["filename"] == "model.safetensors"
    assert not download.get("local_files_only")
    assert "RANDOM" not in caplog.text


def test_uses_the_cache_without_asking_the_network(hub):
    fake = hub(cached=True, reachable=False)
    assert choose_weights(None).weights == str(fake.file)
    assert [call.get("local_files_only") for call in fake.calls] == [True]


def test_offline_falls_back_to_the_bundled_demo_model_under_a_banner(hub, caplog):
    hub(cached=False, reachable=False)
    with caplog.at_level(logging.WARNING):
        model = choose_weights(None)
    assert (model.variant, model.resolution) == ("demo", None)
    assert model.weights == str(weights.BUNDLED_DIR / "birefnet-demo.safetensors")
    assert "not a BiRefNet release" in caplog.text and "downloading it failed" in caplog.text


def test_without_the_bundled_model_it_runs_random_weights_under_a_banner(hub, caplog, monkeypatch, tmp_path):
    hub(cached=False, reachable=False)
    monkeypatch.setattr(weights, "BUNDLED_DIR", tmp_path / "empty")
    with caplog.at_level(logging.WARNING):
        assert choose_weights(None).weights == RANDOM_WEIGHTS
    assert "RANDOM weights" in caplog.text


def test_hf_hub_offline_skips_the_download(hub, monkeypatch):
    fake = hub(cached=False, reachable=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert choose_weights(None).variant == "demo"
    assert all(call.get("local_files_only") for call in fake.calls)


def test_explicit_weights_win(hub):
    fake = hub(cached=True, reachable=True)
    assert choose_weights("/models/mine.safetensors").weights == "/models/mine.safetensors"
    assert not fake.calls
