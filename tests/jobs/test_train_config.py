"""`birefnet train`'s options: the reference's defaults, one-line refusals, and the schedules."""

from __future__ import annotations

import math

import pytest

from jobs.common.cli import ConfigError, parse_config
from jobs.train.config import TrainConfig
from jobs.train.loop import lr_factor


def parse(*args: str) -> TrainConfig:
    return parse_config(TrainConfig, ["--data", "/data/DIS-TR", *args])


def test_the_reference_learning_rate_scales_with_the_global_batch():
    assert parse("--task", "dis", "--batch-size", "4").learning_rate == pytest.approx(1e-4)
    assert parse("--batch-size", "4", "--num-workers", "4").learning_rate == pytest.approx(
        1e-5 * math.sqrt(4)
    )
    assert parse("--lr", "3e-4").learning_rate == 3e-4


def test_a_variant_sets_backbone_size_and_initial_weights():
    config = parse("--variant", "lite")
    assert (config.model_backbone, config.size, config.initial_weights) == ("swin_v1_t", (1024, 1024), "lite")
    assert parse("--variant", "lite-2k").size == (1440, 2560)
    assert parse("--backbone", "swin_v1_demo", "--resolution", "320x256").size == (256, 320)
    assert parse("--backbone", "swin_v1_demo").initial_weights == "random"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--variant", "lite", "--backbone", "swin_v1_l"], "uses swin_v1_t"),
        (["--precision", "fp16"], "fp16 training needs use_gpu"),
        (["--loss-weights", "bce=30,dice=1"], "unknown pixel losses"),
        (["--loss-weights", "bce"], "expected NAME=WEIGHT"),
        (["--augmentations", "flip,mixup"], "unknown augmentations"),
        (["--resolution", "250"], "multiples of 32"),
        (["--backbone", "resnet50"], "unknown backbone"),
    ],
)
def test_bad_combinations_are_one_line_naming_the_problem(args, message):
    with pytest.raises(ConfigError, match=message) as caught:
        parse(*args)
    assert "\n" not in str(caught.value)


def test_loss_weights_override_the_task_and_finetuning_is_capped_at_half_the_run():
    config = parse("--loss-weights", "bce=1,ssim=2", "--gradient-loss-weight", "0.5", "--epochs", "10")
    assert dict(config.weights.pixel) == {"bce": 1.0, "ssim": 2.0} and config.weights.gradient == 0.5
    assert config.finetune_epochs == 5  # the general task's 20, capped
    assert parse("--finetune-last-epochs", "0").finetune_epochs == 0


def test_schedules():
    step = parse(
        "--lr-schedule", "step", "--lr-decay-epochs", "2,-1", "--epochs", "4", "--lr-decay-rate", "0.5"
    )
    assert [lr_factor(s, step, 10, 40) for s in (0, 19, 20, 29, 30, 39)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    cosine = parse("--lr-schedule", "cosine", "--warmup-steps", "10")
    assert lr_factor(0, cosine, 10, 100) == pytest.approx(0.1, rel=0.01)
    assert lr_factor(50, cosine, 10, 100) == pytest.approx(0.5)
    assert lr_factor(100, cosine, 10, 100) == pytest.approx(0.0, abs=1e-9)
    assert lr_factor(5, parse("--lr-schedule", "constant"), 10, 100) == 1
