"""The report page escapes what the manifest holds: file names and messages are data, never markup."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from connectors.manifest import write_manifest_part
from connectors.synthetic import encode_image, object_scene
from jobs.report import build_report

RUN_ID = "20250102T030405-cccc3333"
HOSTILE_SOURCE = "/data/<script>alert(1)</script>&x.jpg"
HOSTILE_ERROR = 'cannot decode "<script>alert(2)</script>" & give up'
#: A real file name: a quote that would end an attribute, a tag and an ampersand.
HOSTILE_NAME = '<img src=x onerror="alert(3)">&y.jpg'
HOSTILE_VARIANT = "<b>lite</b>&more"


def _rows(run: Path, src: Path) -> list[dict]:
    common = {"run_id": RUN_ID, "processed_at": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)}
    return [
        {**common, "id": "a1", "source_uri": HOSTILE_SOURCE, "relative_path": "x.jpg", "status": "error",
         "error": HOSTILE_ERROR},
        {**common, "id": "b2", "source_uri": str(src / HOSTILE_NAME), "relative_path": HOSTILE_NAME,
         "status": "ok", "variant": HOSTILE_VARIANT, "mask_uri": str(run / "masks" / f"{HOSTILE_NAME[:-4]}.png"),
         "mean_confidence": 0.5, "uncertain_fraction": 0.1, "foreground_fraction": 0.3},
    ]  # fmt: skip


def test_hostile_names_and_messages_are_escaped(tmp_path):
    run, src = tmp_path / "run", tmp_path / "src"
    src.mkdir()
    (src / HOSTILE_NAME).write_bytes(encode_image(object_scene(60, 40, seed=1)))
    (run / "masks").mkdir(parents=True)
    Image.fromarray(np.full((40, 60), 255, np.uint8)).save(run / "masks" / f"{HOSTILE_NAME[:-4]}.png")
    write_manifest_part(str(run), _rows(run, src))

    _, summary = build_report(str(run), gallery_size=3, thumbnail_size=64)

    assert (summary.ok, summary.errors) == (1, 1)
    page = (run / "report" / "index.html").read_text(encoding="utf-8")
    assert "<script" not in page and "<img src=x" not in page and "<b>lite" not in page
    name = "&lt;img src=x onerror=&#34;alert(3)&#34;&gt;&amp;y.jpg"
    source, message = (
        "/data/&lt;script&gt;alert(1)&lt;/script&gt;&amp;x.jpg",
        "cannot decode &#34;&lt;script&gt;",
    )
    assert f"<li>{source}: {message}alert(2)&lt;/script&gt;&#34; &amp; give up</li>" in page
    assert f'<div class="path">{name}</div>' in page
    assert f'alt="image of {name}"' in page
    assert "<td>&lt;b&gt;lite&lt;/b&gt;&amp;more (1)</td>" in page
