"""``fkp-serve`` as its users meet it: the webcam page's frame rate in a real browser, and the
API's time per request, each beside the same work done without the server.

    python -m benchmarks.benchmark_serve    # prints the table: results/serve.md

* webcam: the page in headless Chromium (Debian's ``chromium``, driven by Playwright) with a
  fake camera playing a clip of the bundled photo's face moving (``moving_face_clip``, 640 x
  480, 30 frames/s), for ``--seconds``: the frames/s the page shows (camera frames sent,
  answered and drawn; each camera frame is sent once, so the camera's 30 frames/s is the
  ceiling), with and without a filter; beside it, the same clip's frames through the server's
  own per-frame work in this process (``serve.app.CameraStream``: no browser, no network);
* API: the bundled photo posted to ``/api/faces`` one request at a time (median ms) and 20 at
  once (requests/s), beside ``KeypointPipeline.get_landmarks`` on the same bytes in this
  process.

The server runs as a user starts it (``fkp-serve``, its own process, ``Server``); the browser
test (tests/test_serve_browser.py) uses the same clip, browser and server.
"""
from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np
from PIL import Image
from playwright.sync_api import sync_playwright

from benchmarks.common import time_it, write_table
from facial_keypoints.files import atomic_path
from facial_keypoints.images import decode_image, load_image
from facial_keypoints.keypoints.pipeline import KeypointPipeline
from facial_keypoints.paths import DEFAULT_PHOTO, RESULTS_DIR
from facial_keypoints.serve.app import CameraStream

SERVE = [sys.executable, "-c", "import sys; from facial_keypoints.cli import fkp_serve; "
                               "sys.exit(fkp_serve())"]
#: Chromium's switches for a headless run on a machine with no network, with a fake camera
#: (``--use-file-for-fake-video-capture`` is added with the clip).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--use-fake-device-for-media-stream"]
#: The clip: frame size, frames/s, and the face's path (its centre moves left and right).
CLIP_SIZE, CLIP_FPS, CLIP_FRAMES = (640, 480), 30, 120
FACE_CROP = (slice(20, 260), slice(110, 350))   # the bundled photo's head, 240 x 240 px
SWING = 120                                     # px either side of the middle


class Server:
    """``fkp-serve --port 0 ARGS`` in its own process until ``stop``; ``url``: where it
    listens."""

    def __init__(self, *args, timeout=60.0):
        self.process = subprocess.Popen([*SERVE, "--port", "0", "--quiet", *args],
                                        stderr=subprocess.PIPE, text=True)
        line = self.process.stderr.readline()   # printed once it listens (or its error)
        found = re.search(r"serving (http://\S+?)/ ", line)
        if not found:
            self.stop()
            raise RuntimeError(f"fkp-serve did not start: {line}")
        self.url = found.group(1)
        self.log = []   # the rest of its standard error, read as it comes (a full pipe blocks)
        threading.Thread(target=lambda: self.log.extend(self.process.stderr), daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/api/info", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("fkp-serve did not answer")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def face_centre_x(frame: int) -> float:
    """Where the clip's face centre is, across, in frame ``frame`` (it loops)."""
    return CLIP_SIZE[0] / 2 + SWING * np.sin(2 * np.pi * (frame % CLIP_FRAMES) / CLIP_FRAMES)


#: ... and down (it does not move up or down).
FACE_CENTRE_Y = CLIP_SIZE[1] / 2


def clip_frames():
    """The clip's RGB frames: the bundled photo's head on a grey ground, swinging across."""
    head = load_image(DEFAULT_PHOTO)[FACE_CROP]
    h, w = head.shape[:2]
    for i in range(CLIP_FRAMES):
        frame = np.full((CLIP_SIZE[1], CLIP_SIZE[0], 3), 100, np.uint8)
        x = int(round(face_centre_x(i) - w / 2))
        y = int(round(FACE_CENTRE_Y - h / 2))
        frame[y:y + h, x:x + w] = head
        yield frame


def moving_face_clip(path) -> Path:
    """Write the clip as Y4M (what Chromium's fake camera plays, on a loop): 4:2:0 frames."""
    width, height = CLIP_SIZE
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{CLIP_FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in clip_frames():
            f.write(b"FRAME\n" + cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes())
    return Path(path)


def chromium() -> str | None:
    """Debian's Chromium (``apt-get install chromium``), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def launch(playwright, clip):
    """Headless Chromium whose fake camera plays ``clip``."""
    return playwright.chromium.launch(
        executable_path=chromium(), headless=True,
        args=[*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={clip}"])


def open_page(browser, url, camera=True, size=(1100, 1000)):
    """The page in a new context (the camera allowed or not), once it has its menus."""
    context = browser.new_context(permissions=["camera"] if camera else [],
                                  viewport={"width": size[0], "height": size[1]})
    page = context.new_page()
    page.goto(url)
    page.wait_for_function("window.fkp && window.fkp.ready")
    return page


def camera_rate(page, seconds, filter_name=""):
    """Start the page's camera (with ``filter_name``), let it run, then measure for
    ``seconds``: (frames/s the page drew, the server's median ms per frame, faces per
    frame)."""
    page.select_option("#filter", filter_name)
    page.click("#tab-camera")
    page.click("#camera-start")
    page.wait_for_function("window.fkp.camera.frames > 30", timeout=60_000)
    start = page.evaluate("window.fkp.camera.frames")
    time.sleep(seconds)
    cam = page.evaluate("window.fkp.camera")
    page.click("#camera-stop")
    recent = cam["track"][-(cam["frames"] - start):]
    return (cam["frames"] - start) / seconds, statistics.median(r["ms"] for r in recent), \
        statistics.mean(len(r["faces"]) for r in recent)


def screenshot(browser, url, path):
    """The page with the bundled photo uploaded, in a window 800 px wide, as a small PNG."""
    page = open_page(browser, url, size=(800, 600))
    page.set_input_files("#file", str(DEFAULT_PHOTO))
    page.wait_for_function("window.fkp.photo.json !== null")
    shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    page.context.close()
    with atomic_path(path) as tmp:
        shot.quantize(128).save(tmp, "PNG", optimize=True)


def stream_rate(pipe, filter_name="", repeat=3):
    """Frames/s of the clip's frames (as JPEG) through the server's own per-frame work
    (``serve.app.CameraStream``: decoding, the tracker, the filter and its JPEG), in this
    process: no browser, no network."""
    frames = [cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes()
              for f in clip_frames()]
    stream = CameraStream(pipe, filter_name or None)
    t0 = time.perf_counter()
    for i in range(repeat * len(frames)):
        stream.frame(frames[i % len(frames)])
    return repeat * len(frames) / (time.perf_counter() - t0)


def api_times(url, pipe, repeat):
    """(ms per request one at a time, requests/s with 20 at once, ms per photo in this
    process) for the bundled photo; one HTTP client kept open, as a program calling the API
    would (a new client per request adds its own set-up, about 25 ms here)."""
    data = DEFAULT_PHOTO.read_bytes()
    with httpx.Client(timeout=120) as client:
        def ask(_=None):
            client.post(f"{url}/api/faces", content=data).raise_for_status()

        single = time_it(ask, repeat)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(20) as pool:
            list(pool.map(ask, range(20 * 3)))
        together = 60 / (time.perf_counter() - t0)
    direct = time_it(lambda: pipe.get_landmarks(decode_image(data)), repeat)
    return 1000 * statistics.median(single), together, 1000 * statistics.median(direct)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--out", default=str(RESULTS_DIR))
    p.add_argument("--screenshot", metavar="PNG",
                   help="also save the page with the bundled photo uploaded (the README's)")
    args = p.parse_args(argv)
    if chromium() is None:
        sys.exit("benchmark_serve: no chromium: apt-get install chromium")
    pipe = KeypointPipeline()
    rows = []
    server = Server()
    try:
        with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
            browser = launch(pw, moving_face_clip(Path(tmp) / "clip.y4m"))
            for filter_name in ("", "sunglasses"):
                alone = stream_rate(pipe, filter_name)
                page = open_page(browser, server.url)
                fps, ms, faces = camera_rate(page, args.seconds, filter_name)
                page.context.close()
                rows.append({"what": f"webcam page, {filter_name or 'keypoints'} "
                                     f"({CLIP_SIZE[0]}x{CLIP_SIZE[1]})",
                             "served": f"{fps:.1f} frames/s",
                             "server's part (ms/frame)": ms, "faces per frame": round(faces, 2),
                             "without the server": f"{alone:.1f} frames/s (the server's "
                                                   f"per-frame work alone, this process)"})
            if args.screenshot:
                screenshot(browser, server.url, args.screenshot)
            browser.close()
        single, together, direct = api_times(server.url, pipe, args.repeat)
        rows.append({"what": "POST /api/faces, bundled photo, one at a time",
                     "served": f"{single:.1f} ms", "server's part (ms/frame)": None,
                     "faces per frame": 1,
                     "without the server": f"{direct:.1f} ms (get_landmarks, this process)"})
        rows.append({"what": "POST /api/faces, 20 at once", "served": f"{together:.1f} requests/s",
                     "server's part (ms/frame)": None, "faces per frame": 1,
                     "without the server": f"{1000 / direct:.1f} photos/s (one thread)"})
    finally:
        server.stop()
    write_table(rows, args.out, "serve", f"fkp-serve: the webcam page and the API "
                                         f"({os.cpu_count()} CPU cores, headless Chromium on "
                                         f"the same machine)")


if __name__ == "__main__":
    main()
