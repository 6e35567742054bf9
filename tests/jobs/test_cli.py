"""The `birefnet` command line: subcommands, help built from the configs, one-line errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.common.cli import COMMAND_MODULES, COMMANDS, ConfigError, commands, load_command, main, parse_config
from jobs.common.errors import EXIT_JOB_ERROR
from jobs.segment.config import SegmentConfig

ROOT = Path(__file__).resolve().parents[2]
BASE = ["segment", "--input", "in/", "--output", "out/"]


def _birefnet(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it."""
    script = Path(sys.executable).with_name("birefnet")
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_console_script_lists_every_subcommand():
    done = _birefnet("--help")
    assert done.returncode == 0, done.stderr
    names = ["segment", "predict", "serve", "evaluate", "report", "train", "export", "synthesize", "demo"]
    for name in names:
        assert f"    {name}" in done.stdout
    assert [c.name for c in commands()] == names
    assert len(COMMAND_MODULES) == len(commands())


def test_segment_help_shows_every_option_with_its_description(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["segment", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name, field in SegmentConfig.model_fields.items():
        if name == "version":
            continue
        flag = "--" + name.replace("_", "-")
        assert flag in text, flag
        assert " ".join(field.description.split()) in text, name
    assert "--no-skip-existing" in text and "(default: 4)" in text


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        ([*BASE, "--bogus", "1"], "--bogus"),
        ([*BASE, "--batch-size", "many"], "--batch-size"),
        ([*BASE, "--device", "gpu"], "--device"),
        ([*BASE, "--resolution", "1000x1000"], "--resolution"),
        (["segment", "--output", "out/"], "--input"),
        (["sgment"], "sgment"),
        (["evaluate", "--gt", "gt/", "--pred", "p/", "--parallel", "fast"], "--parallel"),
        (["report"], "--run"),
    ],
)
def test_a_wrong_flag_or_value_is_one_line_and_exit_2(argv, named, capsys):
    assert main(argv) == EXIT_JOB_ERROR
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and named in lines[0]
    assert "Traceback" not in captured.err + captured.out


def test_module_entry_points_keep_their_flags(capsys):
    """Every `python -m <module> --help`, in this process (one subprocess below checks that
    `python -m` reaches the same entry point)."""
    for name, entry in COMMANDS.items():
        with pytest.raises(SystemExit) as exited:
            load_command(name).main(["--help"])
        assert exited.value.code == 0, entry.module
        out = capsys.readouterr().out
        assert f"python -m {entry.module}" in out and "--config" in out, entry.module


def test_python_dash_m_runs_a_commands_module():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "jobs.report", "--help"], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0 and "python -m jobs.report" in done.stdout, done.stderr


def test_the_command_list_loads_no_command():
    """`birefnet --help` imports no command module: none of torch, Ray or the commands' own."""
    probe = (
        "import sys\nfrom jobs.common.cli import COMMAND_MODULES, main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in (*COMMAND_MODULES, 'torch', 'ray') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_config_file_sits_beneath_the_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("input: s3://b/in\noutput: s3://b/out\nbatch_size: 8\ns3_region: eu-west-1\n")
    config = parse_config(SegmentConfig, ["--config", str(path), "--batch-size", "2"])
    assert (config.batch_size, config.s3.region) == (2, "eu-west-1")
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read"):
        parse_config(SegmentConfig, ["--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(ConfigError, match="version"):
        parse_config(SegmentConfig, [*BASE[1:], "--version", "1"])


def test_every_command_takes_the_shared_storage_options():
    for command in commands():
        if command.name == "demo":
            continue
        assert {"s3_endpoint_url", "s3_region", "s3_retry_seconds"} <= set(command.config.model_fields)
