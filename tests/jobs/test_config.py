import json
from functools import partial

import pytest

from jobs.common.cli import ConfigError, parse_config
from jobs.segment.config import SegmentConfig

BASE = ["--input", "in/", "--output", "out/"]
parse_args = partial(parse_config, SegmentConfig)


def test_flags_parse_into_typed_fields():
    config = parse_args(
        [
            *BASE,
            "--resolution",
            "1024x768",
            "--concurrency",
            "1,4",
            "--outputs",
            "mask,cutout",
            "--num-gpus-per-actor",
            "0.5",
        ]
    )
    assert config.resolution == (1024, 768)
    assert config.concurrency == (1, 4)
    assert config.outputs == ["mask", "cutout"]
    assert config.num_gpus_per_actor == 0.5
    assert parse_args([*BASE, "--concurrency", "3"]).concurrency == (3, 3)
    assert parse_args([*BASE, "--resolution", "512"]).resolution == (512, 512)


def test_file_is_loaded_and_flags_override_it(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("input: s3://bucket/photos\noutput: s3://bucket/masks\nbatch_size: 8\nvariant: lite\n")
    config = parse_args(["--config", str(path), "--batch-size", "2"])
    assert (config.input, config.batch_size, config.variant) == ("s3://bucket/photos", 2, "lite")
    as_json = tmp_path / "run.json"
    as_json.write_text(json.dumps({"input": "a", "output": "b", "dtype": "bfloat16"}))
    assert parse_args(["--config", str(as_json)]).dtype == "bfloat16"


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        (["--variant", "nope"], "variant"),
        (["--resolution", "1000"], "resolution"),
        (["--batch-size", "0"], "batch_size"),
        (["--concurrency", "4,2"], "concurrency"),
        (["--outputs", "mask,alpha"], "outputs"),
        (["--max-failure-fraction", "2"], "max_failure_fraction"),
        (["--dtype", "int8"], "dtype"),
    ],
)
def test_errors_name_the_bad_field(flags, field):
    with pytest.raises(ConfigError) as err:
        parse_args([*BASE, *flags])
    message = str(err.value)
    assert f"--{field.replace('_', '-')}:" in message and "\n" not in message


def test_unknown_keys_in_a_file_are_refused(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("input: a\noutput: b\nbatchsize: 8\n")
    with pytest.raises(ConfigError, match="batchsize"):
        parse_args(["--config", str(path)])


def test_output_must_differ_from_input():
    with pytest.raises(ConfigError, match="output must differ"):
        parse_args(["--input", "data/", "--output", "data"])


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        (["--device", "cuda", "--num-gpus-per-actor", "0"], "Ray hides every GPU"),
        (["--device", "cpu", "--num-gpus-per-actor", "1"], "reserve GPUs it never uses"),
        (["--num-gpus-per-actor", "1.5"], "fractions below 1 or whole GPUs"),
        (["--device", "cpu", "--cuda-graphs"], "--cuda-graphs needs --device cuda"),
    ],
)
def test_device_and_gpu_count_must_agree(flags, complaint):
    with pytest.raises(ConfigError, match=complaint) as err:
        parse_args([*BASE, *flags])
    assert "\n" not in str(err.value)


def test_consistent_device_settings_are_accepted():
    assert parse_args([*BASE, "--device", "cuda", "--num-gpus-per-actor", "0.5"]).num_gpus_per_actor == 0.5
    assert parse_args([*BASE, "--device", "cuda", "--num-gpus-per-actor", "2"]).num_gpus_per_actor == 2
    assert parse_args([*BASE, "--device", "cpu", "--num-gpus-per-actor", "0"]).device == "cpu"


def test_auto_dtype_follows_the_hardware():
    config = parse_args(BASE)
    assert config.resolved_dtype("cuda", cpu_native_bf16=False) == "float16"
    assert config.resolved_dtype("cpu", cpu_native_bf16=True) == "bfloat16"
    assert config.resolved_dtype("cpu", cpu_native_bf16=False) == "float32"
    assert parse_args([*BASE, "--dtype", "float32"]).resolved_dtype("cuda", True) == "float32"
