"""`python -m jobs.report`: the HTML report of a run built by hand (no segmentation job needed).

The run holds ok and error rows over two runs, error messages with HTML specials, an ok row
whose mask file is gone, a mask of the wrong size, a tar member, and a tiled scene with a COG
mask. One test renders the page in headless Chromium (Debian package `chromium`).
"""

from __future__ import annotations

import html
import io
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from connectors.listing import item_id
from connectors.manifest import write_manifest_part
from connectors.raster import RasterInfo, write_geotiff_mask
from connectors.synthetic import encode_image, object_scene
from jobs.report import main, mask_location

CHROMIUM = "/usr/bin/chromium"
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
RUN_1, RUN_2 = "20250102T030405-aaaa1111", "20250102T040000-bbbb2222"


def _mask(width: int, height: int, kind: str) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    if kind == "empty":
        return np.zeros((height, width), np.uint8)
    if kind == "full":
        return np.full((height, width), 255, np.uint8)
    disc = np.hypot(yy - height / 2, xx - width / 2) < min(width, height) / 3
    if kind == "soft":  # a blurry, hesitant mask
        return np.clip(disc * 150 + 60, 0, 255).astype(np.uint8)
    return (disc * 255).astype(np.uint8)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _row(src: Path, out: Path, name: str, minutes: float, run_id: str = RUN_1, **values) -> dict:
    uri = values.pop("source_uri", str(src / name))
    return {
        "id": item_id(uri),
        "source_uri": uri,
        "relative_path": name,
        "status": "ok",
        "run_id": run_id,
        "processed_at": T0 + timedelta(minutes=minutes),
        "variant": "lite",
        "weights_sha256": "random",
        "dtype": "float32",
        "resolution": "64x64",
        "decode_seconds": 0.01 + 0.001 * minutes,
        "infer_seconds": 0.2 + 0.01 * minutes,
        "encode_seconds": 0.02,
        "tile_count": 1,
        "chunk_count": 1,
        "mask_uri": str(out / "masks" / Path(name).with_suffix(".png")) if "error" not in values else None,
        **values,
    }


# Messages with HTML specials, to check escaping; each names its input as the job's do.
ERRORS = {
    "truncated.jpg": "cannot decode image (<broken data stream> & truncated)",
    "empty.png": "file is empty",
    "bomb.png": "2048x2048 exceeds the 1000000 pixel limit (decompression bomb?)",
    "bomb2.png": "4096x4096 exceeds the 1000000 pixel limit (decompression bomb?)",
}
OK_NAMES = ("crisp.jpg", "soft.jpg", "empty_mask.jpg", "full_mask.jpg", "gone.jpg", "wrong_size.jpg")


@pytest.fixture(scope="module")
def run_root(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    out = tmp_path_factory.mktemp("run")
    kinds = {"crisp.jpg": "crisp", "soft.jpg": "soft", "empty_mask.jpg": "empty", "full_mask.jpg": "full"}
    rows = []
    for i, name in enumerate(OK_NAMES):
        (src / name).write_bytes(encode_image(object_scene(120, 80, seed=i)))
        if name != "gone.jpg":  # its mask is missing on disk
            size = (40, 40) if name == "wrong_size.jpg" else (120, 80)
            mask = _mask(*size, kinds.get(name, "crisp"))
            target = out / "masks" / Path(name).with_suffix(".png")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_png(mask))
        rows.append(
            _row(
                src,
                out,
                name,
                minutes=i,
                width=120,
                height=80,
                mean_confidence=0.2 if name == "soft.jpg" else 0.9 - 0.01 * i,
                uncertain_fraction=0.6 if name == "soft.jpg" else 0.01 * i,
                foreground_fraction={"empty": 0.0, "full": 1.0}.get(kinds.get(name, ""), 0.3),
                is_empty=name == "empty_mask.jpg",
                is_full=name == "full_mask.jpg",
            )
        )
    # A tar member: its mask exists, its image is not extracted.
    member = _row(src, out, "shard/member.jpg", 6, source_uri=f"{src}/shard.tar#member.jpg")
    rows.append({**member, "mean_confidence": 0.5, "uncertain_fraction": 0.1, "foreground_fraction": 0.3})
    (out / "masks" / "shard").mkdir(parents=True)
    (out / "masks" / "shard" / "member.png").write_bytes(_png(_mask(64, 64, "crisp")))
    # A tiled scene with a COG mask and a seam score.
    (src / "scene.tif").write_bytes(encode_image(object_scene(300, 200, seed=9), "TIFF"))
    info = RasterInfo(
        width=300,
        height=200,
        count=1,
        dtypes=("uint8",),
        crs=None,
        transform=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        nodata=0,
        is_georeferenced=False,
        block_shapes=((256, 256),),
    )
    write_geotiff_mask(str(out / "masks" / "scene.tif"), info, _mask(300, 200, "crisp"))
    rows.append(
        _row(src, out, "scene.tif", 7, width=300, height=200, mean_confidence=0.8, uncertain_fraction=0.05,
             foreground_fraction=0.3, seam_disagreement=0.07, tile_count=6,
             mask_uri=str(out / "masks" / "scene.tif"), decode_seconds=None, infer_seconds=None)
    )  # fmt: skip
    write_manifest_part(str(out), rows)
    errors = [
        _row(src, out, name, 10 + i, run_id=RUN_2, status="error", error=f"{src / name}: {message}")
        for i, (name, message) in enumerate(ERRORS.items())
    ]
    # An older failure of an input that later succeeded: only the newest row counts.
    errors.append(_row(src, out, "crisp.jpg", -5, run_id=RUN_2, status="error", error="old failure"))
    write_manifest_part(str(out), errors)
    assert main(["--run", str(out), "--gallery-size", "5", "--thumbnail-size", "128"]) == 0
    return out


@pytest.fixture(scope="module")
def page(run_root) -> str:
    return (run_root / "report" / "index.html").read_text(encoding="utf-8")


def _count(page: str, key: str) -> int:
    match = re.search(rf'id="count-{key}"><span class="n">(\d+)</span>', page)
    assert match, f"no {key} count in the page"
    return int(match.group(1))


def test_counts_are_of_the_newest_row_per_input(page):
    assert _count(page, "inputs") == len(OK_NAMES) + 2 + len(ERRORS)
    assert _count(page, "ok") == len(OK_NAMES) + 2
    assert _count(page, "error") == len(ERRORS)
    assert (_count(page, "empty"), _count(page, "full"), _count(page, "tiled")) == (1, 1, 1)
    assert "old failure" not in page
    assert "random weights" in page


def test_every_error_message_is_listed_and_escaped(run_root, page):
    for message in ERRORS.values():
        assert html.escape(message) in page
    assert "<broken data stream>" not in page
    assert "&lt;broken data stream&gt; &amp; truncated" in page
    # The two decompression bombs differ only in numbers: one group of two.
    assert re.search(r"<h3>2 &times; <span class=\"pattern\">&lt;input&gt;: NxN exceeds", page)


def test_throughput_per_run(page):
    assert RUN_1 in page and RUN_2 in page
    assert "rows/s" in page and "Where the time went" in page
    assert re.search(r"decode [\d.]+ s \([\d.]+%\)", page)


def test_histograms_are_inlined(page):
    for column in ("mean_confidence", "uncertain_fraction", "foreground_fraction", "seam_disagreement"):
        assert f'alt="Histogram of {column}"' in page
    assert 'alt="Histogram of seconds per input by stage"' in page
    assert page.count('src="data:image/png;base64,') == 5


def test_gallery_images_exist_and_the_page_needs_nothing_external(run_root, page):
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) >= 15
    for source in sources:
        assert source.startswith("thumbs/")
        with Image.open(run_root / "report" / source) as thumb:
            assert max(thumb.size) <= 128
    assert "<script" not in page and "<link" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    for name in ("soft.jpg", "empty_mask.jpg", "full_mask.jpg", "scene.tif"):
        assert f'<div class="path">{name}</div>' in page
    assert 'id="gallery-seams"' in page


def test_missing_and_unpaired_files_are_named(run_root, page):
    missing = html.escape(f"missing mask: {run_root / 'masks' / 'gone.png'}")
    assert missing in page
    problems = page[page.index('id="problem-list"') :]
    assert missing in problems
    assert "wrong_size.jpg: mask is 40x40 px but the image is 120x80 px" in problems
    assert "member.jpg is a tar member: not extracted" in page
    gone = item_id(str(run_root.parent / "src" / "gone.jpg"))
    assert not (run_root / "report" / "thumbs" / f"{gone}-overlay.png").exists()


def test_scene_mask_thumbnail_comes_from_the_cog(run_root):
    scene = next((run_root / "report" / "thumbs").glob("*-overlay.png"))
    assert scene.stat().st_size > 0
    overlays = {p.name for p in (run_root / "report" / "thumbs").glob("*-overlay.png")}
    assert len(overlays) >= 6


def test_one_run_only_and_bad_run_ids(run_root, tmp_path, capsys):
    output = tmp_path / "only-errors"
    assert main(["--run", str(run_root), "--run-id", RUN_2, "--output", str(output)]) == 0
    page = (output / "index.html").read_text()
    assert _count(page, "error") == len(ERRORS) + 1 and _count(page, "ok") == 0
    assert "old failure" in page
    assert main(["--run", str(run_root), "--run-id", "nope", "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and RUN_1 in err
    assert main(["--run", str(tmp_path / "no-such-run")]) == 2
    assert "no manifest rows" in capsys.readouterr().err


def test_masks_are_found_in_a_moved_run(tmp_path):
    row = {"mask_uri": "/old/place/out/masks/a/b.png", "relative_path": "a/b.jpg"}
    assert mask_location(row, str(tmp_path)) == f"{tmp_path}/masks/a/b.png"
    assert mask_location(row | {"mask_uri": "s3://x/elsewhere.png"}, "/r") == "s3://x/elsewhere.png"
    assert mask_location({"mask_uri": None, "relative_path": "a.jpg"}, "/r") is None


def test_the_page_renders_in_headless_chromium(run_root, tmp_path):
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        found = shutil.which("chromium")
        pytest.fail(
            f"{CHROMIUM} not found{f' (but {found} is)' if found else ''}: install the Debian package "
            "`chromium` (apt-get install chromium, or `make system-deps`) to run the report render test"
        )
    screenshot = tmp_path / "report.png"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={screenshot}",
        "--window-size=1280,2000",
        (run_root / "report" / "index.html").as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and screenshot.is_file(), result.stderr[-3000:]
    with Image.open(screenshot) as image:
        assert image.size == (1280, 2000)
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert pixels.std() > 20 and colours > 200, (
        f"blank-looking screenshot: std {pixels.std():.1f}, {colours} colours"
    )
    # Copy kept for a human look when debugging: pytest --basetemp=... keeps tmp_path.


def test_command_line_on_s3(run_root, s3_server, s3_bucket):
    """The run copied to S3: masks are found under the new root, the report is written beside them."""
    fs = s3_server.filesystem()
    for folder in ("manifest", "masks"):
        fs.put(str(run_root / folder), f"{s3_bucket}/copied/", recursive=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=s3_server.key,
        AWS_SECRET_ACCESS_KEY=s3_server.secret,
        AWS_EC2_METADATA_DISABLED="true",
    )
    run = f"s3://{s3_bucket}/copied"
    result = subprocess.run(
        [sys.executable, "-m", "jobs.report", "--run", run, "--s3-endpoint-url", s3_server.endpoint_url],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"report: {run}/report/index.html" in result.stdout
    page = fs.cat_file(f"{s3_bucket}/copied/report/index.html").decode()
    assert _count(page, "error") == len(ERRORS)
    assert html.escape(f"missing mask: {run}/masks/gone.png") in page
    thumbs = set(re.findall(r'<img src="(thumbs/[^"]+)"', page))
    assert thumbs and all(fs.exists(f"{s3_bucket}/copied/report/{t}") for t in thumbs)
