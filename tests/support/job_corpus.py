"""Generated input corpora for job tests: good images of several kinds and every kind of bad input."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from connectors.synthetic import encode_image, object_scene

GOOD = {
    "a.jpg": (96, 64),
    "nested/deeper/b.png": (50, 70),
    "c_rgba.png": (40, 40),
    "rotated.jpg": (64, 48),  # EXIF orientation 6: decoded size is 48 x 64
}
BAD = ("truncated.jpg", "empty.png", "text.jpg", "bomb.png")
BOMB_SIDE = 2048
BOMB_LIMIT = 1_000_000  # max_image_pixels for tests; the bomb exceeds it
#: Command-line flags of a fast smoke run over the corpus: random tiny model on CPU.
SMOKE_FLAGS = ["--variant", "lite", "--weights", "random", "--resolution", "64", "--device", "cpu",
               "--max-image-pixels", str(BOMB_LIMIT)]  # fmt: skip


def expected_size(name: str) -> tuple[int, int]:
    """(height, width) of the mask for a good input."""
    w, h = GOOD[name]
    return (w, h) if name == "rotated.jpg" else (h, w)


def corpus_files() -> dict[str, bytes]:
    files = {"a.jpg": encode_image(object_scene(96, 64, 1))}
    files["nested/deeper/b.png"] = encode_image(object_scene(50, 70, 2), "PNG")
    rgba = object_scene(40, 40, 3).convert("RGBA")
    files["c_rgba.png"] = encode_image(rgba, "PNG")
    rotated = object_scene(64, 48, 4)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    rotated.save(buffer, format="JPEG", exif=exif.tobytes())
    files["rotated.jpg"] = buffer.getvalue()
    files["truncated.jpg"] = files["a.jpg"][: len(files["a.jpg"]) // 2]
    files["empty.png"] = b""
    files["text.jpg"] = b"this is not an image at all\n"
    bomb = io.BytesIO()
    Image.fromarray(np.zeros((BOMB_SIDE, BOMB_SIDE), np.uint8)).save(bomb, format="PNG")
    files["bomb.png"] = bomb.getvalue()
    files["notes.txt"] = b"not an image extension: never listed"
    return files


def write_corpus(root: Path) -> None:
    for name, data in corpus_files().items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
