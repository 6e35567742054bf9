"""The output layout and its collision rule."""

from __future__ import annotations

import pytest

from connectors.layout import OutputLayout, output_names, plain_name


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("a/b.jpg", "a/b"),
        ("b.jpeg", "b"),
        ("x/y/z.PNG", "x/y/z"),
        ("a/photo.v2.jpg", "a/photo.v2"),
        ("a/noext", "a/noext"),
        ("a/.hidden", "a/.hidden"),
    ],
)
def test_plain_name_drops_the_extension(relative, expected):
    assert plain_name(relative) == expected


def test_layout_gives_absolute_uris_under_the_root():
    layout = OutputLayout("s3://bucket/out")
    assert layout.mask("a/b") == "s3://bucket/out/masks/a/b.png"
    assert layout.cutout("a/b") == "s3://bucket/out/cutouts/a/b.png"
    assert layout.scene_mask("scene") == "s3://bucket/out/masks/scene.tif"
    assert layout.manifest == "s3://bucket/out/manifest"
    files = layout.run("r1")
    assert (files.config, files.summary) == (
        "s3://bucket/out/runs/r1/config.json",
        "s3://bucket/out/runs/r1/summary.json",
    )
    assert layout.staging == "s3://bucket/out/staging", "staged chunks outlive runs: not under runs/"
    with pytest.raises(ValueError, match="escapes"):
        layout.mask("../../etc/passwd")


def test_inputs_without_rivals_keep_the_plain_name():
    assert output_names(["a.jpg", "b.png", "d/a.png"]) == ["a", "b", "d/a"]


def test_rivals_all_keep_their_extension():
    assert output_names(["a.jpg", "a.png", "a.JPG", "b.jpg"]) == ["a.jpg", "a.png", "a.JPG", "b"]


def test_the_rule_does_not_depend_on_listing_order():
    names = ["x/a.png", "x/a.jpg", "x/a.webp", "y.tif", "y.jpg"]
    expected = dict(zip(names, output_names(names), strict=True))
    reordered = list(reversed(names))
    assert dict(zip(reordered, output_names(reordered), strict=True)) == expected


def test_a_kept_extension_that_is_taken_leaves_the_later_input_without_a_name():
    # a.jpg and a.png are rivals, so a.jpg keeps "a.jpg"; a.jpg.png's plain name is "a.jpg" too.
    assert output_names(["a.jpg", "a.png", "a.jpg.png"]) == ["a.jpg", "a.png", None]
    assert output_names(["a.jpg.png", "a.png", "a.jpg"]) == [None, "a.png", "a.jpg"]


def test_every_name_is_unique():
    names = ["a.jpg", "a.png", "a.jpg.png", "a.png.jpg", "a", "a.tar", "b/c.jpg", "b/c.jpeg", "b/c.jpg.jpeg"]
    given = [n for n in output_names(names) if n is not None]
    assert len(given) == len(set(given))
