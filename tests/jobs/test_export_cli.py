"""`birefnet export` refuses settings that cannot make a sensible file, in one line and exit 2,
before any weights are read."""

from __future__ import annotations

import pytest

from jobs.export import main


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--resolution", "512"], "--resolution fixes the graph's size; add --no-dynamic"),
        (["--batch", "4"], "--batch fixes the graph's batch; add --no-dynamic"),
        (["--opset", "17"], "--opset: Input should be greater than or equal to 18"),
        (
            ["--variant", "dynamic", "--no-dynamic"],
            "variant 'dynamic' has no fixed working size; give --resolution",
        ),
        (["--no-dynamic", "--resolution", "500"], "must be positive multiples of 32"),
        (["--format", "tflite"], "--format"),
        (["--variant", "nope"], "unknown variant 'nope'"),
    ],
)
def test_bad_combinations_are_refused_in_one_line(flags, message, tmp_path, capsys):
    assert main(["--output", str(tmp_path / "m.onnx"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "m.onnx").exists()


def test_the_output_must_be_an_onnx_file(tmp_path, capsys):
    assert main(["--output", str(tmp_path / "model.pt")]) == 2
    assert "is not an .onnx file name" in capsys.readouterr().err


def test_missing_weights_are_one_line(tmp_path, capsys):
    assert (
        main(["--weights", str(tmp_path / "absent.safetensors"), "--output", str(tmp_path / "m.onnx")]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert "does not exist" in err and len(err.splitlines()) == 1
