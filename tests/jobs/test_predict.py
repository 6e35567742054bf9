"""`birefnet predict`: local images and folders without Ray, with a mix of inputs and options."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from connectors.synthetic import encode_image, object_scene
from jobs.common.cli import main as birefnet

FLAGS = [
    "--variant",
    "lite",
    "--weights",
    "random",
    "--resolution",
    "64",
    "--device",
    "cpu",
    "--dtype",
    "float32",
]


def _folder(root: Path) -> dict[str, tuple[int, int]]:
    """A folder of mixed inputs; returns the output name -> (width, height) of each good one."""
    (root / "sub").mkdir(parents=True)
    (root / "a.jpg").write_bytes(encode_image(object_scene(90, 60, 1)))
    sixteen = np.asarray(object_scene(50, 40, 2).convert("L")).astype(np.uint16) * 257
    Image.fromarray(sixteen).save(root / "sub" / "grey16.png")
    tifffile.imwrite(root / "float.tif", np.random.default_rng(0).random((30, 20), np.float32))
    # Pillow reads no 3-band float TIFF; the job's scene path does (birefnet segment).
    tifffile.imwrite(root / "float3.tif", np.random.default_rng(0).random((30, 20, 3), np.float32))
    (root / "two_band.png").write_bytes(encode_image(object_scene(24, 32, 3).convert("LA"), "PNG"))
    (root / "rgba.png").write_bytes(encode_image(object_scene(40, 40, 4).convert("RGBA"), "PNG"))
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "empty.png").write_bytes(b"")
    shard = io.BytesIO()
    with tarfile.open(fileobj=shard, mode="w") as tar:
        member = encode_image(object_scene(33, 21, 5), "PNG")
        info = tarfile.TarInfo("inside.png")
        info.size = len(member)
        tar.addfile(info, io.BytesIO(member))
    (root / "shard.tar").write_bytes(shard.getvalue())
    return {
        "a": (90, 60), "sub/grey16": (50, 40), "float": (20, 30), "two_band": (24, 32), "rgba": (40, 40),
        "shard/inside": (33, 21),
    }  # fmt: skip


def _sizes(root: Path, kind: str) -> dict[str, tuple[tuple[int, int], str]]:
    found = {}
    for path in sorted((root / kind).rglob("*.png")):
        with Image.open(path) as image:
            found[path.relative_to(root / kind).with_suffix("").as_posix()] = (image.size, image.mode)
    return found


def test_a_folder_of_mixed_inputs_gives_masks_and_cutouts_and_names_each_failure(tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    good = _folder(src)
    lone = tmp_path / "lone.png"
    lone.write_bytes(encode_image(object_scene(17, 13, 6), "PNG"))
    code = birefnet(["predict", str(src), str(lone), str(tmp_path / "missing.jpg"), "-o", str(out), *FLAGS])
    captured = capsys.readouterr()
    assert code == 1
    assert _sizes(out, "masks") == {**{k: (v, "L") for k, v in good.items()}, "lone": ((17, 13), "L")}
    assert _sizes(out, "cutouts") == {**{k: (v, "RGBA") for k, v in good.items()}, "lone": ((17, 13), "RGBA")}
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert sorted(errors) == sorted(
        [
            f"error: {src / 'broken.jpg'}: not a recognised image format",
            f"error: {src / 'empty.png'}: file is empty",
            f"error: {src / 'float3.tif'}: not a recognised image format",
            f"error: {tmp_path / 'missing.jpg'}: not found",
        ]
    )
    assert f"7 done, 4 failed: {out}" in captured.out
    assert "image/s" in captured.err  # the progress bar
    assert not [p for p in out.rglob(".*") if p.is_file()], "temporary files left behind"


def test_only_mask_cutout_and_a_background_colour(tmp_path):
    image = tmp_path / "photo.jpg"
    image.write_bytes(encode_image(object_scene(48, 32, 1)))
    assert birefnet(["predict", str(image), "-o", str(tmp_path / "m"), "--only-mask", *FLAGS]) == 0
    assert (
        _sizes(tmp_path / "m", "masks") == {"photo": ((48, 32), "L")}
        and not (tmp_path / "m" / "cutouts").exists()
    )
    assert (
        birefnet(
            ["predict", str(image), "-o", str(tmp_path / "c"), "--cutout", "--bgcolor", "#00ff00", *FLAGS]
        )
        == 0
    )
    assert (
        _sizes(tmp_path / "c", "cutouts") == {"photo": ((48, 32), "RGB")}
        and not (tmp_path / "c" / "masks").exists()
    )


def test_a_box_keeps_the_mask_inside_it(tmp_path):
    image = tmp_path / "photo.png"
    image.write_bytes(encode_image(object_scene(80, 60, 2), "PNG"))
    assert (
        birefnet(["predict", str(image), "-o", str(tmp_path), "--only-mask", "--box", "10,20,50,40", *FLAGS])
        == 0
    )
    mask = np.asarray(Image.open(tmp_path / "masks" / "photo.png")).copy()
    assert mask.shape == (60, 80) and mask[20:40, 10:50].any()
    mask[20:40, 10:50] = 0
    assert not mask.any()


def test_two_inputs_with_one_output_name_do_not_overwrite_each_other(tmp_path, capsys):
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "same.png").write_bytes(encode_image(object_scene(20, 20, 1), "PNG"))
    code = birefnet(
        ["predict", str(tmp_path / "x" / "same.png"), str(tmp_path / "y"), "-o", str(tmp_path / "o"), *FLAGS]
    )
    assert code == 1
    assert "another input already wrote 'same'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--only-mask", "--cutout"], "--only-mask and --cutout exclude each other"),
        (["--only-mask", "--bgcolor", "#fff000"], "--bgcolor and --refine-foreground shape cut-outs"),
        (["--bgcolor", "purple"], "--bgcolor: expected a colour as #rrggbb or R,G,B"),
        (["--box", "1,2,3"], "--box: box '1,2,3' is not four numbers"),
        (["--variant", "nope"], "--variant: unknown variant 'nope'"),
    ],
)
def test_bad_options_get_one_line_and_exit_2(tmp_path, capsys, flags, message):
    image = tmp_path / "photo.png"
    image.write_bytes(encode_image(object_scene(20, 20, 1), "PNG"))
    assert birefnet(["predict", str(image), "-o", str(tmp_path), *FLAGS, *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_no_images_or_no_output_is_a_one_line_error(tmp_path, capsys):
    assert birefnet(["predict", "-o", str(tmp_path), *FLAGS]) == 2
    assert "--images" in capsys.readouterr().err
    assert birefnet(["predict", str(tmp_path), *FLAGS]) == 2
    assert "--output" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "flags", "mode"),
    [("mask.png", [], "L"), ("cut.png", ["--cutout"], "RGBA"), ("cut.webp", ["--cutout"], "RGBA"),
     ("mask.JPG", [], "L"), ("green.jpg", ["--cutout", "--bgcolor", "0,255,0"], "RGB")],
)  # fmt: skip
def test_one_image_and_an_image_file_as_output_writes_that_file(tmp_path, name, flags, mode):
    image = tmp_path / "photo.jpg"
    image.write_bytes(encode_image(object_scene(48, 32, 1)))
    target = tmp_path / "out" / name
    assert birefnet(["predict", str(image), "-o", str(target), *FLAGS, *flags]) == 0
    assert target.is_file(), "the file the user named, not a folder of that name"
    with Image.open(target) as written:
        assert (written.size, written.mode) == ((48, 32), mode)
        assert written.format == {".png": "PNG", ".webp": "WEBP", ".jpg": "JPEG"}[target.suffix.lower()]
    assert sorted(p.name for p in target.parent.iterdir()) == [name]


def test_the_mask_file_equals_the_mask_of_the_folder_layout(tmp_path):
    image = tmp_path / "photo.png"
    image.write_bytes(encode_image(object_scene(40, 30, 2), "PNG"))
    assert birefnet(["predict", str(image), "-o", str(tmp_path / "one.png"), *FLAGS]) == 0
    assert birefnet(["predict", str(image), "-o", str(tmp_path / "dir"), "--only-mask", *FLAGS]) == 0
    assert (tmp_path / "one.png").read_bytes() == (tmp_path / "dir" / "masks" / "photo.png").read_bytes()


def test_an_existing_folder_named_like_an_image_stays_a_folder(tmp_path):
    image = tmp_path / "photo.png"
    image.write_bytes(encode_image(object_scene(40, 30, 2), "PNG"))
    (tmp_path / "out.png").mkdir()
    assert birefnet(["predict", str(image), "-o", str(tmp_path / "out.png"), "--only-mask", *FLAGS]) == 0
    assert (tmp_path / "out.png" / "masks" / "photo.png").is_file()


def test_an_image_file_as_output_for_a_folder_or_several_inputs_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "in" / name).write_bytes(encode_image(object_scene(20, 20, 1), "PNG"))
    for inputs in ([str(tmp_path / "in")], [str(tmp_path / "in" / "a.png"), str(tmp_path / "in" / "b.png")]):
        assert birefnet(["predict", *inputs, "-o", str(tmp_path / "mask.png"), *FLAGS]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "names one file" in err[-1], err
    assert not (tmp_path / "mask.png").exists()
    flags = ["--cutout", *FLAGS]
    assert birefnet(["predict", str(tmp_path / "in" / "a.png"), "-o", str(tmp_path / "c.jpg"), *flags]) == 2
    assert "JPEG holds no transparency" in capsys.readouterr().err
