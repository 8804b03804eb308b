"""The web app of ``fkp-serve``: one page and a JSON API over ``KeypointPipeline``.

Routes (``create_app``):

* ``GET /``: the page (``static/index.html``; ``/static/``: its script and style, no CDN);
* ``POST /api/faces``: an image, as the multipart field ``file`` or as the raw bytes of the
  body -> the JSON ``fkp-detect --json`` writes (``{"model", "images": [entry], "complete"}``)
  for that one image; query ``detector`` and ``markup`` as ``fkp-detect``'s options;
* ``POST /api/annotated``: the same image -> the annotated picture (boxes and keypoints, or the
  face filter ``filter``): PNG for an upload named ``.png``, JPEG otherwise;
* ``GET /api/info``: the model, its mark-ups, the detectors, filters and the upload limit;
* ``WebSocket /api/camera``: live frames. The page sends each camera frame as JPEG bytes and
  gets back its faces as JSON (``fkp-detect``'s entry for a video frame), tracked across
  frames with ids and One Euro smoothing (``KeypointPipeline.tracker``, as ``fkp-detect``
  does for videos), then, with a filter (``"picture": true``), the filtered frame as JPEG
  bytes; a text message ``{"filter": name or null}`` switches filters;
* ``GET /docs``, ``/redoc``, ``/openapi.json``: the API's documents (``fastapi_offline``: their
  scripts served locally too).

What a request can do: a body over the limit is refused with 413 before it is read in full,
and so is a picture over ``max_megapixels`` before it is decoded; anything that is not an image
is a 400, an unknown option a 422, each with a one-line reason; no error answers with a stack
trace; the JSON names the model by its file name only; images come in the request, and the
server reads no file a request names. One pipeline per (detector, mark-up) is shared by the
request threads (``KeypointPipeline`` is thread-safe; ``tests/test_detect.py``); each camera
connection has its own tracker.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Literal

import cv2
from fastapi import HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from facial_keypoints import __version__
from facial_keypoints.batch import image_entry
from facial_keypoints.detection import DETECTORS
from facial_keypoints.filters.drawing import REGION_COLORS, render
from facial_keypoints.filters.overlays import FILTERS
from facial_keypoints.images import ImageReadError, ImageTooLarge, decode_image
from facial_keypoints.keypoints.pipeline import KeypointPipeline
from facial_keypoints.landmarks import REGIONS
from facial_keypoints.output import dumps
from facial_keypoints.paths import DEFAULT_MODEL, SERVE_STATIC

#: The largest request body (an uploaded image, or a camera frame) by default: 20 MiB.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: The largest picture, decoded, by default: 50 megapixels (150 MB in memory as RGB).
MAX_MEGAPIXELS = 50
#: JPEG quality of the annotated pictures and of the filtered camera frames.
JPEG_QUALITY = 90
#: The detector runs on every this many camera frames; the faces are refitted in between.
CAMERA_DETECT_EVERY = 10

Detector = Literal[tuple(DETECTORS)]
DEFAULT_DETECTOR = next(iter(DETECTORS))   # fkp-detect's default
#: onnxruntime's threads for the keypoint model of the shared pipelines: half the cores, as
#: concurrent requests share them (``python -m benchmarks.benchmark --threads-shared``,
#: ``results/threads.md``: one pipeline shared by threads served more photos per second so
#: than on every core, which one caller's pipeline prefers).
SHARED_THREADS = max(1, (os.cpu_count() or 2) // 2)
Filter = Literal[tuple(FILTERS)]
#: How the upload is sent, for the OpenAPI document (the handlers read the body themselves, to
#: enforce the size limit before it is all in memory).
IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "the image"}}}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary",
                                            "description": "the image's bytes"}},
    "image/*": {"schema": {"type": "string", "format": "binary"}}}}}


class Pipelines:
    """One ``KeypointPipeline`` per (detector, mark-up), made when first asked for and then
    shared by every request."""

    def __init__(self, model=DEFAULT_MODEL, backend="onnx"):
        self.model, self.backend = str(model), backend
        self._lock = threading.Lock()
        # the default pipeline: a missing or broken model fails here, before anything is served
        self.default = KeypointPipeline(self.model, detector=DEFAULT_DETECTOR, backend=backend,
                                        threads=SHARED_THREADS)
        self._made = {(DEFAULT_DETECTOR, self.default.markup): self.default}

    def get(self, detector, markup) -> KeypointPipeline:
        """The pipeline for ``detector`` and ``markup`` (None: the model's default);
        ``HTTPException`` 400 for a mark-up the model does not have."""
        markup = markup or self.default.markup
        if markup not in self.default.markups:
            raise HTTPException(400, f"markup {markup!r}: this model has "
                                     f"{', '.join(self.default.markups)}")
        with self._lock:
            if (detector, markup) not in self._made:
                self._made[detector, markup] = KeypointPipeline(
                    self.model, detector=detector, markup=markup, backend=self.backend,
                    threads=SHARED_THREADS)
            return self._made[detector, markup]


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, refused with 413 as soon as it is known to be over ``limit``
    (its declared length, or the bytes received so far)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, _too_large(limit))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, _too_large(limit))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit):
    return f"the upload is over the server's limit of {limit / 2**20:g} MiB: send a smaller image"


async def uploaded_image(request: Request, limit: int, max_pixels: int):
    """(name, RGB array) of the image a request carries: the multipart field ``file``, or the
    raw body; ``HTTPException`` 400 or 413 with a one-line reason otherwise."""
    body = await read_body(request, limit)
    name = "upload"
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async def receive():   # the body again, already read (and measured) above
            return {"type": "http.request", "body": body, "more_body": False}
        try:
            form = await Request(request.scope, receive).form(max_files=1, max_fields=8)
        except Exception as e:   # a malformed multipart body
            raise HTTPException(400, f"not a readable multipart form ({e})") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(400, "no image: send it as the multipart field 'file', or as "
                                     "the raw body")
        name = Path(upload.filename or name).name   # a label only: never opened
        body = await upload.read()
    try:
        return name, decode_image(body, name, max_pixels=max_pixels)
    except ImageTooLarge as e:
        raise HTTPException(413, str(e)) from None
    except ImageReadError as e:
        raise HTTPException(400, str(e)) from None


def encode_picture(rgb, jpeg=True) -> tuple[bytes, str]:
    """An RGB array as JPEG (or PNG) bytes and their media type."""
    ok, data = cv2.imencode(".jpg" if jpeg else ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if jpeg else [])
    if not ok:
        raise ValueError("the picture could not be encoded")
    return data.tobytes(), "image/jpeg" if jpeg else "image/png"


def one_line(errors) -> str:
    """FastAPI's validation errors as one line: ``query parameter detector: Input should be
    'blazeface' or 'haar'; ...``."""
    return "; ".join(f"{' '.join(str(x) for x in e.get('loc', ()))}: {e.get('msg', '')}"
                     .replace("query ", "query parameter ", 1) for e in errors)


def create_app(model=DEFAULT_MODEL, backend="onnx", max_upload_bytes=MAX_UPLOAD_BYTES,
               max_megapixels=MAX_MEGAPIXELS):
    """The app (an ASGI application: ``uvicorn.run(create_app())``). The model is loaded
    here: a missing or broken one raises ``ModelLoadError`` before anything is served.
    ``max_upload_bytes`` bounds a request's body, ``max_megapixels`` an image's size once
    decoded (a small file can hold a huge picture)."""
    max_pixels = int(max_megapixels * 1_000_000)
    pipelines = Pipelines(model, backend)
    app = FastAPIOffline(title="Facial keypoints", version=__version__,
                         description="Find every face in an image and put 68 keypoints "
                                     "(iBUG 300-W order) on each. Live frames (the page's "
                                     "webcam) go through the WebSocket /api/camera: send "
                                     "each frame as JPEG bytes, receive its faces as JSON, "
                                     "tracked with ids; with ?filter=NAME the filtered frame "
                                     "follows as JPEG bytes.")
    app.state.pipelines = pipelines
    app.mount("/static", StaticFiles(directory=SERVE_STATIC), name="static")

    @app.exception_handler(Exception)
    async def unexpected(request, error):   # one line, never a stack trace
        return JSONResponse({"detail": f"internal error ({type(error).__name__}): see the "
                                       f"server's log"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, error):   # an unknown option: one line, as every refusal
        return JSONResponse({"detail": one_line(error.errors())}, status_code=422)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(SERVE_STATIC / "index.html")

    @app.get("/api/info", summary="The model and the options the API takes")
    async def info():
        pipe = pipelines.default
        return {"model": Path(pipelines.model).name, "version": __version__,
                "markups": pipe.markups, "markup": pipe.markup, "detectors": list(DETECTORS),
                "filters": list(FILTERS),
                "max_upload_bytes": max_upload_bytes, "max_megapixels": max_megapixels,
                "camera_detect_every": CAMERA_DETECT_EVERY,
                # how the page colours the points: as the annotated pictures do
                "regions": {k: list(v) for k, v in REGIONS.items()},
                "colors": REGION_COLORS}

    def faces_in(image, detector, markup):
        return pipelines.get(detector, markup).get_landmarks(image)

    @app.post("/api/faces", openapi_extra=IMAGE_BODY,
              summary="Every face in an image with its 68 keypoints, as fkp-detect --json")
    async def faces(request: Request, detector: Detector = DEFAULT_DETECTOR,
                    markup: str | None = None):
        name, image = await uploaded_image(request, max_upload_bytes, max_pixels)
        found = await run_in_threadpool(faces_in, image, detector, markup)
        document = {"model": Path(pipelines.model).name,   # the server's folders stay private
                    "images": [image_entry(name, image, found)],
                    "complete": True}
        return Response(dumps(document), media_type="application/json")

    @app.post("/api/annotated", openapi_extra=IMAGE_BODY, response_class=Response,
              responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}},
              summary="The image with boxes and keypoints drawn, or a face filter")
    async def annotated(request: Request, detector: Detector = DEFAULT_DETECTOR,
                        markup: str | None = None,
                        filter: Filter | None = Query(None, description="a face filter "
                                                      "instead of boxes and keypoints")):
        name, image = await uploaded_image(request, max_upload_bytes, max_pixels)

        def draw():
            picture = render(image, faces_in(image, detector, markup), filter)
            return encode_picture(picture, jpeg=Path(name).suffix.lower() != ".png")
        data, media = await run_in_threadpool(draw)
        return Response(data, media_type=media)

    @app.websocket("/api/camera")
    async def camera(ws: WebSocket, detector: Detector = DEFAULT_DETECTOR,
                     markup: str | None = None, filter: Filter | None = None):
        await ws.accept()
        try:
            stream = CameraStream(pipelines.get(detector, markup), filter, max_pixels)
        except HTTPException as e:   # refused: the page shows the close frame's reason
            await ws.close(1008, reason=e.detail[:120])
            return
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("text") is not None:
                    await ws.send_text(dumps(stream.settings(message["text"])))
                    continue
                reply, picture = await run_in_threadpool(stream.frame, message.get("bytes"))
                await ws.send_text(dumps(reply))
                if picture is not None:
                    await ws.send_bytes(picture)
        except WebSocketDisconnect:
            pass

    return app


class CameraStream:
    """One camera connection: its frames through a tracker of their own."""

    def __init__(self, pipe, filter_name=None, max_pixels=None):
        self.tracker = pipe.tracker(CAMERA_DETECT_EVERY)
        self.filter, self.max_pixels = filter_name, max_pixels
        self.start, self.frames = time.monotonic(), 0

    def settings(self, text) -> dict:
        """A settings message (``{"filter": name or null}``) applied; the reply says what
        holds now."""
        try:
            wanted = json.loads(text)
            name = wanted["filter"]
            if name is not None and name not in FILTERS:
                raise ValueError(f"filter must be one of {', '.join(FILTERS)} or null")
        except (ValueError, KeyError, TypeError) as e:
            return {"error": f"not a settings message ({e})", "filter": self.filter}
        self.filter = name
        return {"filter": self.filter}

    def frame(self, data) -> tuple[dict, bytes | None]:
        """One frame's JSON entry (``fkp-detect``'s for a video frame) and, with a filter,
        the filtered frame as JPEG."""
        t0 = time.perf_counter()
        index, self.frames = self.frames, self.frames + 1
        try:
            image = decode_image(data or b"", f"frame {index}", max_pixels=self.max_pixels)
        except ImageReadError as e:
            return {"frame": index, "faces": [], "error": str(e)}, None
        faces = self.tracker(image, t=time.monotonic() - self.start)
        picture = encode_picture(render(image, faces, self.filter))[0] if self.filter else None
        h, w = image.shape[:2]
        return {"frame": index, "width": w, "height": h, "faces": [f.to_json() for f in faces],
                "error": None, "picture": picture is not None,
                "ms": round((time.perf_counter() - t0) * 1000, 1)}, picture
