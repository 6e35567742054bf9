"""The online service on a real local Ray Serve, over real HTTP on loopback: images of every kind,
broken ones, bad parameters and limits, concurrency, and the web page in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from birefnet_core.box_guidance import Box
from birefnet_core.postprocessing import full_size_mask
from birefnet_core.precision import cpu_has_native_bf16
from birefnet_core.variants import get_variant
from connectors.images import encode_mask_png
from connectors.synthetic import encode_image, object_scene
from jobs.common.image_prediction import prepare_encoded
from jobs.common.replicas import ReplicaSpec, load_predictor
from jobs.serve import ServeConfig, start_service
from tests.support.ports import free_ports

MAX_BODY = 400_000
MAX_PIXELS = 2_000_000


@pytest.fixture(scope="module")
def service(embedded_ray):
    from ray import serve

    (port,) = free_ports(1)
    config = ServeConfig(
        variant="demo", device="cpu", port=port, max_batch_size=8, batch_wait_timeout_s=0.05,
        cpus_per_replica=1, cpus_per_ingress=0.5, max_body_bytes=MAX_BODY, max_image_pixels=MAX_PIXELS,
    )  # fmt: skip
    url = start_service(config)
    yield url, config
    serve.shutdown()


def _png(image: Image.Image) -> bytes:
    return encode_image(image, "PNG")


def _decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _inputs() -> dict[str, tuple[bytes, tuple[int, int]]]:
    """Name -> (bytes, (width, height) of the answer)."""
    rgb = object_scene(120, 90, 1)
    sixteen = Image.fromarray(np.asarray(object_scene(70, 50, 2).convert("L")).astype(np.uint16) * 257)
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    object_scene(64, 48, 4).save(rotated, format="JPEG", exif=exif.tobytes())
    return {
        "rgb.jpg": (encode_image(rgb), rgb.size),
        "grey16.png": (_png(sixteen), sixteen.size),
        "rgba.png": (_png(object_scene(40, 60, 3).convert("RGBA")), (40, 60)),
        "palette.gif": (encode_image(object_scene(33, 47, 5).convert("P"), "GIF"), (33, 47)),
        "rotated.jpg": (rotated.getvalue(), (48, 64)),
        "tiny.png": (_png(Image.new("RGB", (1, 1), "red")), (1, 1)),
    }


INPUTS = _inputs()


def _post(url: str, data: bytes, timeout: float = 120, **params) -> requests.Response:
    return requests.post(f"{url}/v1/segment", params=params, data=data, timeout=timeout)


def test_health_names_the_model(service):
    url, _ = service
    answer = requests.get(f"{url}/healthz", timeout=30)
    assert answer.status_code == 200
    body = answer.json()
    assert (body["status"], body["variant"], body["device"], body["backend"]) == (
        "ok",
        "demo",
        "cpu",
        "torch",
    )
    assert len(body["weights_sha256"]) == 64


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_masks_are_pngs_of_each_images_size(service, name):
    url, _ = service
    data, size = INPUTS[name]
    answer = _post(url, data)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    mask = _decoded(answer.content)
    assert (mask.mode, mask.size) == ("L", size)
    assert (answer.headers["x-image-width"], answer.headers["x-image-height"]) == tuple(map(str, size))


def test_a_served_mask_is_byte_for_byte_the_jobs_mask(service):
    """The same image path as `birefnet predict` and the job's stages, in-process here."""
    url, config = service
    data, _ = INPUTS["rgb.jpg"]
    dtype = config.resolved_dtype("cpu", cpu_has_native_bf16())  # what the replica chose
    predictor, _ = load_predictor(
        ReplicaSpec("demo", variant="demo", device="cpu", dtype=dtype, s3=config.s3)
    )
    prepared = prepare_encoded(data, "x", get_variant("demo"), None, MAX_PIXELS)
    levels = predictor.infer_batches(prepared.pixels[None], 1, quantize=True)[0]
    expected = encode_mask_png(full_size_mask(levels, prepared.size))
    assert _post(url, data).content == expected


def test_multipart_cutout_over_a_background_colour(service):
    url, _ = service
    data, size = INPUTS["rgba.png"]
    answer = requests.post(
        f"{url}/v1/segment",
        files={"image": ("photo.png", data, "image/png")},
        data={"output": "cutout", "background": "#ff0000", "refine_foreground": "true"},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    cutout = _decoded(answer.content)
    assert (cutout.mode, cutout.size) == ("RGB", size)
    transparent = _decoded(_post(url, data, output="cutout").content)
    assert (transparent.mode, transparent.size) == ("RGBA", size)


def test_json_answers_carry_every_output_asked_for(service):
    url, _ = service
    data, (width, height) = INPUTS["rgb.jpg"]
    answer = _post(url, data, output="mask,cutout,probabilities", format="json")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert (body["width"], body["height"], body["box"]) == (width, height, None)
    images = {name: _decoded(base64.b64decode(body[name])) for name in ("mask", "cutout", "probabilities")}
    assert {name: (i.mode, i.size) for name, i in images.items()} == {
        "mask": ("L", (width, height)),
        "cutout": ("RGBA", (width, height)),
        "probabilities": ("I;16", (width, height)),
    }
    fine = np.asarray(images["probabilities"], np.float64) / 257
    assert np.abs(fine - np.asarray(images["mask"], np.float64)).max() <= 1.5
    headers = requests.post(
        f"{url}/v1/segment", data=data, headers={"Accept": "application/json"}, timeout=60
    )
    assert set(headers.json()) >= {"width", "height", "mask"}


def test_a_box_guided_mask_is_zero_outside_the_box(service):
    url, _ = service
    data, (width, height) = INPUTS["rgb.jpg"]
    box = Box(20, 10, 100, 70)
    answer = _post(url, data, box=str(box), output="mask,probabilities", format="json")
    assert answer.status_code == 200, answer.text
    assert answer.json()["box"] == "20,10,100,70"
    for name in ("mask", "probabilities"):
        mask = np.asarray(_decoded(base64.b64decode(answer.json()[name])))
        assert mask.shape == (height, width)
        outside = np.ones(mask.shape, bool)
        outside[box.slices] = False
        assert not mask[outside].any() and mask[box.slices].any(), name


def _bomb() -> bytes:
    """A PNG that declares 4000 x 4000 pixels in a few kilobytes."""
    buffer = io.BytesIO()
    Image.new("L", (4000, 4000)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("body", "params", "status", "message"),
    [
        (b"", {}, 400, "no image in the request"),
        (b"not an image at all", {}, 422, "not a recognised image format"),
        (INPUTS["rgb.jpg"][0][: len(INPUTS["rgb.jpg"][0]) // 2], {}, 422, "cannot decode"),
        (_bomb(), {}, 413, "exceeds the 2000000 pixel limit"),
        (b"x" * (MAX_BODY + 1), {}, 413, f"exceeds the {MAX_BODY} byte limit"),
        (INPUTS["rgb.jpg"][0], {"output": "depth"}, 400, "output.0: Input should be"),
        (INPUTS["rgb.jpg"][0], {"output": "mask,cutout"}, 400, "a PNG answer holds one output"),
        (INPUTS["rgb.jpg"][0], {"box": "1,2,3"}, 400, "box '1,2,3' is not four numbers"),
        (INPUTS["rgb.jpg"][0], {"box": "500,0,600,10"}, 400, "lies outside the 120x90 image"),
        (INPUTS["rgb.jpg"][0], {"background": "teal"}, 400, "expected a colour as #rrggbb"),
        (INPUTS["rgb.jpg"][0], {"format": "tiff"}, 400, "format: Input should be"),
        (INPUTS["rgb.jpg"][0], {"colour": "red"}, 400, "colour: Extra inputs are not permitted"),
    ],
)
def test_bad_requests_get_clear_4xx_answers(service, body, params, status, message):
    url, _ = service
    answer = _post(url, body, **params)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert message in answer.json()["error"]


def test_a_multipart_body_without_a_file_is_refused(service):
    url, _ = service
    answer = requests.post(f"{url}/v1/segment", files={"output": (None, "mask")}, timeout=30)
    assert answer.status_code == 400
    assert "no file field" in answer.json()["error"]


def test_32_concurrent_requests_all_succeed(service):
    url, _ = service
    names = sorted(INPUTS) * 6
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda name: _post(url, INPUTS[name][0]), names[:32]))
    assert [a.status_code for a in answers] == [200] * 32
    for name, answer in zip(names, answers, strict=False):
        assert _decoded(answer.content).size == INPUTS[name][1]
    # Broken requests among good ones do not disturb them.
    mixed = [INPUTS["rgb.jpg"][0], b"garbage"] * 8
    with ThreadPoolExecutor(16) as pool:
        codes = [a.status_code for a in pool.map(lambda body: _post(url, body), mixed)]
    assert codes == [200, 422] * 8


def test_the_page_is_self_contained(service):
    url, _ = service
    answer = requests.get(f"{url}/", timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    page = answer.text
    assert 'id="file"' in page and "v1/segment" in page
    assert "http://" not in page and "https://" not in page  # no external scripts, styles or fonts


@pytest.fixture
def browser():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.fail("Debian's chromium and chromium-driver are needed (make system-deps installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield driver
    driver.quit()


def _wait_for_status(driver, text: str) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 90).until(lambda d: text in d.find_element("id", "status").text)
    return driver.find_element("id", "status").text


def _shown_png(driver, element: str) -> Image.Image:
    src = driver.find_element("id", element).get_attribute("src")
    return _decoded(base64.b64decode(src.split(",", 1)[1]))


def test_the_page_segments_an_uploaded_image_and_a_drawn_box(service, browser, tmp_path: Path):
    from selenium.webdriver.common.action_chains import ActionChains

    url, _ = service
    data, (width, height) = INPUTS["rgb.jpg"]
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    browser.get(f"{url}/")
    for name in ("mask", "cutout"):  # no broken-image placeholders before the first result
        assert not browser.find_element("id", name).is_displayed()
        assert browser.find_element("id", f"{name}-hint").is_displayed()
    browser.find_element("id", "file").send_keys(str(path))
    assert _wait_for_status(browser, "Done").startswith(f"Done: {width}x{height}")
    for name in ("mask", "cutout"):
        assert browser.find_element("id", name).is_displayed()
        assert not browser.find_element("id", f"{name}-hint").is_displayed()
    sizes = browser.execute_script(
        "return ['mask', 'cutout'].map(id => [document.getElementById(id).naturalWidth,"
        " document.getElementById(id).naturalHeight]);"
    )
    assert sizes == [[width, height], [width, height]]
    assert _shown_png(browser, "mask").size == (width, height)
    assert browser.find_element("id", "mask-download").get_attribute("href").startswith("data:image/png")

    # Drag a box over the middle of the shown image: the new mask keeps to it.
    canvas = browser.find_element("id", "canvas")
    shown = canvas.size
    ActionChains(browser).move_to_element_with_offset(canvas, -shown["width"] // 4, -shown["height"] // 4)\
        .click_and_hold().move_by_offset(shown["width"] // 2, shown["height"] // 2).release().perform()  # fmt: skip
    status = _wait_for_status(browser, "box")
    box = Box.parse(status.rsplit("box ", 1)[1])
    assert 0 < box.x0 < box.x1 < width and 0 < box.y0 < box.y1 < height
    mask = np.asarray(_shown_png(browser, "mask"))
    outside = np.ones(mask.shape, bool)
    outside[box.slices] = False
    assert mask.shape == (height, width) and not mask[outside].any()


def test_the_load_test_reports_throughput_latency_and_errors_per_concurrency(service):
    """`benchmarks/serve.py --url` against this service (the benchmark's own start-up is the
    fixture's: `start_service`)."""
    url, _ = service
    done = subprocess.run(
        [sys.executable, "benchmarks/serve.py", "--url", url, "--requests", "3", "--concurrency", "1,2",
         "--warmup", "1", "--image", "64x48"],
        cwd=Path(__file__).parents[2], capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert [r["concurrency"] for r in result["results"]] == [1, 2]
    for level in result["results"]:
        assert level["errors"] == 0 and level["requests_per_second"] > 0
        assert level["latency_p50_ms"] <= level["latency_p99_ms"]
    assert "cores" in result["machine"]
