"""``fkp-serve``'s page in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright, against the server started as a user starts it.

* the bundled photo uploaded -> one face with 68 points, in the page's own data and on the
  screenshot (the points' colours where the points are);
* a text file uploaded -> the page's message, and the next photo still works; a picture with
  no face -> the page says so;
* a fake webcam playing a clip of the bundled photo's face swinging across the frame -> the
  points follow the face at 15 frames/s or more, with one id;
* the camera denied, absent, or the server gone -> the page says so.

Without Chromium the tests are skipped, unless ``FKP_REQUIRE_BROWSER=1`` (CI sets it: there a
missing browser fails).
"""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import sync_playwright

from benchmarks.benchmark_serve import (
    CHROMIUM_ARGS,
    FACE_CENTRE_Y,
    SWING,
    Server,
    camera_rate,
    chromium,
    face_centre_x,
    launch,
    moving_face_clip,
    open_page,
)
from facial_keypoints.filters.drawing import REGION_COLORS
from facial_keypoints.landmarks import REGIONS
from helpers_keypoints import ASTRONAUT

if chromium() is None:
    if os.environ.get("FKP_REQUIRE_BROWSER") == "1":
        raise RuntimeError("FKP_REQUIRE_BROWSER=1 but there is no chromium: apt-get install "
                           "chromium")
    pytest.skip("no chromium (apt-get install chromium)", allow_module_level=True)

pytestmark = [pytest.mark.slow, pytest.mark.serial]   # it times the page: run alone


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def pw():
    with sync_playwright() as playwright:   # one per thread: every browser here comes from it
        yield playwright


@pytest.fixture(scope="module")
def browser(pw, tmp_path_factory):
    clip = moving_face_clip(tmp_path_factory.mktemp("camera") / "clip.y4m")
    b = launch(pw, clip)
    yield b
    b.close()


@pytest.fixture
def page(browser, server):
    p = open_page(browser, server.url)
    yield p
    p.context.close()


def upload(page, path=None, name=None, data=None):
    page.set_input_files("#file", str(path) if path else
                         {"name": name, "mimeType": "text/plain", "buffer": data})


def test_an_uploaded_photo_shows_one_face_with_68_points(page):
    upload(page, ASTRONAUT)
    page.wait_for_function("window.fkp.photo.json !== null")
    photo = page.evaluate("window.fkp.photo")
    (face,) = photo["faces"]
    points = np.array(face["keypoints"])
    assert points.shape == (68, 2)
    assert page.evaluate("window.fkp.message") is None
    assert page.locator("#faces tbody tr").count() == 1
    assert "1 face" in page.inner_text("#photo-summary")
    # the screenshot: each region's colour where its points are (the canvas is drawn 1:1)
    shot = np.asarray(Image.open(io.BytesIO(page.locator("#photo-canvas").screenshot())))[..., :3]
    assert abs(shot.shape[0] - 512) <= 1 and abs(shot.shape[1] - 512) <= 1   # (rounding)
    hits = 0
    for region, idx in REGIONS.items():
        for x, y in points[list(idx)]:
            patch = shot[int(y):int(y) + 2, int(x):int(x) + 2].reshape(-1, 3).astype(int)
            hits += np.abs(patch - REGION_COLORS[region]).max(axis=1).min() < 40
    assert hits >= 64, f"only {hits} of 68 points drawn in their colour"
    assert not page.locator("#download-json").is_disabled()


def test_a_text_file_gets_the_message_and_the_page_still_works(page):
    upload(page, ASTRONAUT)
    page.wait_for_function("window.fkp.photo.faces.length === 1")
    upload(page, name="notes.txt", data=b"Dear diary, no picture here.\n")
    page.wait_for_function("window.fkp.message !== null")
    assert page.is_visible("#message")
    assert page.inner_text("#message").startswith("notes.txt: not a readable image (")
    # nothing of the photo before stays on show, nor can be downloaded
    assert page.evaluate("window.fkp.photo.json") is None
    assert page.locator("#faces").is_hidden()
    assert page.locator("#download-picture").is_disabled()
    assert page.evaluate("document.getElementById('photo-canvas').width") == 0
    upload(page, ASTRONAUT)
    page.wait_for_function("window.fkp.photo.faces.length === 1")
    assert page.is_hidden("#message")


def test_a_picture_with_no_face_says_so(page, tmp_path):
    wall = tmp_path / "wall.png"
    Image.fromarray(np.full((200, 300, 3), 128, np.uint8)).save(wall)
    upload(page, wall)
    page.wait_for_function("window.fkp.photo.json !== null")
    assert page.evaluate("window.fkp.photo.faces") == []
    assert page.inner_text("#message") == "No face was found in this picture."
    assert page.locator("#faces").is_hidden()


def test_the_webcam_points_follow_the_face_at_15_frames_a_second(page):
    fps, _, faces = camera_rate(page, seconds=4)
    cam = page.evaluate("window.fkp.camera")
    print(f"webcam page: {fps:.1f} frames/s")
    assert fps >= 15
    recent = [r for r in cam["track"] if r["faces"]][-100:]
    assert faces == 1 and len(recent) >= 60
    assert {f["id"] for r in recent for f in r["faces"]} == {0}
    centres = np.array([np.mean(r["faces"][0]["keypoints"], axis=0) for r in recent])
    # the face swings across the frame (and the points with it), never up or down
    middle = face_centre_x(0)
    assert np.all(np.abs(centres[:, 1] - FACE_CENTRE_Y) < 30)
    assert np.all(np.abs(centres[:, 0] - middle) < SWING + 30)
    assert np.ptp(centres[:, 0]) > 1.4 * SWING


def test_an_absent_camera_gets_the_message(pw, server):
    """Chromium without its fake camera has none here (no camera on these machines)."""
    bare = pw.chromium.launch(executable_path=chromium(), headless=True, args=[
        a for a in CHROMIUM_ARGS if a != "--use-fake-device-for-media-stream"])
    try:
        page = open_page(bare, server.url)
        page.click("#tab-camera")
        page.click("#camera-start")
        page.wait_for_function("window.fkp.message !== null")
        assert page.inner_text("#message").startswith("No usable camera was found")
        assert page.evaluate("window.fkp.camera.running") is False
        assert not page.locator("#camera-start").is_disabled()
    finally:
        bare.close()


def test_a_lost_server_gets_the_message(browser):
    own = Server()
    try:
        page = open_page(browser, own.url)
        page.click("#tab-camera")
        page.click("#camera-start")
        page.wait_for_function("window.fkp.camera.frames > 5", timeout=60_000)
    finally:
        own.stop()
    page.wait_for_function("window.fkp.message !== null")
    assert page.inner_text("#message").startswith("The connection to the server was lost")
    page.context.close()


def test_a_denied_camera_gets_the_message(browser, server):
    page = open_page(browser, server.url, camera=False)
    try:
        page.click("#tab-camera")
        page.click("#camera-start")
        page.wait_for_function("window.fkp.message !== null")
        assert "denied" in page.inner_text("#message")
        assert page.evaluate("window.fkp.camera.running") is False
    finally:
        page.context.close()
