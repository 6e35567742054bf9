"""Pairing prediction masks with ground truth by key, and reading any mask file as grey uint8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from connectors.images import ImageDecodeError
from connectors.pairs import dataset_name_of, mask_key, pair_masks, read_mask
from tests.support.mask_files import write_image


def test_keys_drop_extension_and_layout_folders():
    assert mask_key("DIS-VD/gt/x.png") == "DIS-VD/x"
    assert mask_key("masks/DIS-VD/im/x.png") == "DIS-VD/x"
    assert mask_key("shelf/product.final.jpg") == "shelf/product.final"
    assert mask_key("gt.png") == "gt"  # file names are never dropped
    assert dataset_name_of("/data/DIS5K/DIS-TE1/gt/") == "DIS-TE1"
    assert dataset_name_of("s3://bucket/HRSOD") == "HRSOD"


def test_marker_folders_hide_their_siblings_and_png_wins_duplicates(tmp_path):
    preds, gts = tmp_path / "run", tmp_path / "gt"
    for rel in ["masks/a.png", "masks/a.jpg", "cutouts/a.png", "masks/b.png"]:
        write_image(preds / rel, np.zeros((4, 4), np.uint8))
    for rel in ["a.png", "c.png"]:
        write_image(gts / rel, np.zeros((4, 4), np.uint8))
    result = pair_masks(str(preds), str(gts), dataset_name="set")
    assert [(p.key, Path(p.pred_uri).relative_to(preds).as_posix(), p.dataset) for p in result.pairs] == [
        ("a", "masks/a.png", "set")
    ]
    assert result.duplicates == ["masks/a.jpg"]
    assert result.unpaired_pred == ["masks/b.png"]
    assert result.missing_pred == ["c.png"]


@pytest.mark.parametrize(
    ("mode", "array", "expected"),
    [
        ("RGB", np.full((3, 4, 3), (255, 0, 0), np.uint8), 76),  # Pillow's ITU-R 601-2 luma
        ("RGBA", np.full((3, 4, 4), (200, 200, 200, 0), np.uint8), 200),  # alpha ignored
        ("I;16", np.full((3, 4), 65535, np.uint16), 255),
        ("1", np.ones((3, 4), bool), 255),
    ],
)
def test_read_mask_gives_grey_uint8(tmp_path, mode, array, expected):
    path = tmp_path / "m.png"
    Image.fromarray(array).save(path)
    assert Image.open(path).mode == mode
    mask = read_mask(str(path))
    assert mask.dtype == np.uint8 and mask.shape == (3, 4)
    assert (mask == expected).all()


def test_read_mask_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        read_mask(str(tmp_path / "nope.png"))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ImageDecodeError, match=r"bad\.png"):
        read_mask(str(tmp_path / "bad.png"))
