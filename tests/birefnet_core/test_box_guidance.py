import numpy as np
import pytest

from birefnet_core.box_guidance import Box, BoxGuide
from birefnet_core.predictor import Predictor
from birefnet_core.size import Size
from tests.support.deterministic_weights import det_model
from tests.support.disc_images import disc_on_texture


@pytest.fixture(scope="module")
def predictor():
    return Predictor(det_model(), size=Size(64, 64))


def test_box_guided_mask_is_zero_outside_and_the_crops_prediction_inside(predictor):
    image = disc_on_texture(120, 160, 3)
    box = Box(40, 30, 110, 90)
    guided = predictor.predict([image], boxes=[box], box_margin=0.25)[0]
    assert guided.shape == (120, 160)

    outside = np.ones(guided.shape, bool)
    outside[box.slices] = False
    assert not guided[outside].any()

    # The window is the box grown by a quarter of its size on each side (clipped to the image).
    window = Box(40 - 18, 30 - 15, 110 + 18, 90 + 15)
    assert BoxGuide.for_image(box, Size(120, 160), 0.25).window == window
    crop_mask = predictor.predict([image[window.slices]])[0]
    inside = crop_mask[box.y0 - window.y0 : box.y1 - window.y0, box.x0 - window.x0 : box.x1 - window.x0]
    np.testing.assert_array_equal(guided[box.slices], inside)
    assert inside.any()


def test_unguided_images_in_the_same_batch_are_unchanged(predictor):
    images = [disc_on_texture(80, 90, 1), disc_on_texture(80, 90, 2)]
    plain = predictor.predict(images)
    mixed = predictor.predict(images, boxes=[None, Box(0, 0, 45, 40)])
    np.testing.assert_array_equal(plain[0], mixed[0])
    assert not mixed[1][40:].any() and not mixed[1][:, 45:].any()


def test_window_is_clipped_to_the_image_and_a_box_overhanging_it_is_trimmed():
    guide = BoxGuide.for_image(Box(90, 5, 300, 50), Size(100, 120), margin=0.5)
    assert guide.box == Box(90, 5, 120, 50)
    assert guide.window == Box(75, 0, 120, 72)  # 0.5 * 45 rounds to 22
    pasted = guide.paste(np.ones(guide.window.size, np.uint8))
    assert pasted.sum() == 30 * 45 and pasted[5:50, 90:].all()


@pytest.mark.parametrize(
    ("text", "box"),
    [
        ("1,2,30,40", Box(1, 2, 30, 40)),
        (" 1.5, 2.2 ,29.1,40 ", Box(1, 2, 30, 40)),
        ([0, 0, 5, 5], Box(0, 0, 5, 5)),
    ],
)
def test_parse(text, box):
    assert Box.parse(text) == box
    assert Box.parse(str(box)) == box


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "5,5,5,9", "10,0,2,4", "-1,0,4,4", "0,0,nan,4", ""])
def test_bad_boxes_are_refused_naming_the_box(text):
    with pytest.raises(ValueError, match="box"):
        Box.parse(text)


def test_a_box_outside_the_image_is_refused():
    with pytest.raises(ValueError, match="outside the 40x30 image"):
        BoxGuide.for_image(Box(50, 0, 60, 10), Size(30, 40))
