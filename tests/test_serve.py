"""``fkp-serve``'s JSON API and camera socket (the page itself: test_serve_browser.py).

* ``POST /api/faces`` gives ``fkp-detect --json``'s JSON for the same image (within 0.01 px),
  from a multipart upload or the raw body, with ``detector`` and ``markup``;
* what a client can get wrong is a 400 (not an image, no file, an unknown mark-up), 413 (too
  big, declared or streamed) or 422 (an unknown detector), with a one-line reason and no trace;
* 20 concurrent requests on different images each get their own image's faces;
* the server reads no file a request names; it listens on localhost unless told otherwise;
  the page and the API documents load nothing from another host;
* the camera socket tracks a moving face with one id, sends the filtered frame when asked,
  and survives a frame that is not an image.
"""
from __future__ import annotations

import io
import json
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from benchmarks.benchmark_serve import Server
from facial_keypoints.cli import detect, fkp_serve
from facial_keypoints.cli.serve import build_parser
from facial_keypoints.images import load_image
from facial_keypoints.serve.app import create_app
from helpers_keypoints import ASTRONAUT
from test_bad_input import png_claiming_size

LIMIT_MB, LIMIT_MP = 1, 1


@pytest.fixture(scope="module")
def server():
    s = Server("--max-upload-mb", str(LIMIT_MB), "--max-megapixels", str(LIMIT_MP))
    yield s
    s.stop()


def jpeg(rgb, quality=95) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "JPEG", quality=quality)
    return out.getvalue()


def png(rgb) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "PNG")
    return out.getvalue()


def detect_json(path, tmp_path, *options):
    """``fkp-detect``'s JSON document for one image."""
    out = tmp_path / f"detect_{len(list(tmp_path.iterdir()))}.json"
    assert detect.main([str(path), "--json", str(out), "--quiet", *options]) == 0
    return json.loads(out.read_text())


def assert_same_faces(api, cli):
    assert len(api["faces"]) == len(cli["faces"]) >= 1
    for a, c in zip(api["faces"], cli["faces"]):
        np.testing.assert_allclose(a["keypoints"], c["keypoints"], atol=0.01)
        np.testing.assert_allclose(a["box"], c["box"], atol=0.01)
        for key in ("score", "confidence", "roll"):
            assert a[key] == pytest.approx(c[key], abs=1e-3), key


@pytest.mark.parametrize("options", [[], ["--detector", "haar"], ["--markup", "course"]],
                         ids=["default", "haar", "course-markup"])
def test_the_api_gives_fkp_detects_json(server, tmp_path, options):
    cli = detect_json(ASTRONAUT, tmp_path, *options)
    query = dict(zip([o.lstrip("-") for o in options[::2]], options[1::2]))
    multipart = httpx.post(f"{server.url}/api/faces", params=query,
                           files={"file": ("astronaut.jpg", ASTRONAUT.read_bytes())}, timeout=60)
    raw = httpx.post(f"{server.url}/api/faces", params=query, content=ASTRONAUT.read_bytes(),
                     headers={"content-type": "application/octet-stream"}, timeout=60)
    for response in (multipart, raw):
        assert response.status_code == 200, response.text
        doc = response.json()
        assert set(doc) == set(cli) and doc["complete"] is True
        assert doc["model"] == "keypoints.pt"   # by name: the server's folders stay private
        (api_entry,), (cli_entry,) = doc["images"], cli["images"]
        assert set(api_entry) == set(cli_entry)
        assert (api_entry["width"], api_entry["height"], api_entry["error"]) == \
            (cli_entry["width"], cli_entry["height"], None)
        assert_same_faces(api_entry, cli_entry)
    assert multipart.json()["images"][0]["path"] == "astronaut.jpg"
    assert raw.json()["images"][0]["path"] == "upload"


def test_a_picture_with_no_face_is_an_empty_list(server):
    blank = jpeg(np.full((120, 160, 3), 128, np.uint8))
    response = httpx.post(f"{server.url}/api/faces", files={"file": ("wall.jpg", blank)})
    assert response.status_code == 200
    assert response.json()["images"][0]["faces"] == []


def _one_line_detail(response):
    body = response.json()
    assert set(body) == {"detail"}
    assert isinstance(body["detail"], str) and "\n" not in body["detail"]
    assert "Traceback" not in response.text
    return body["detail"]


@pytest.mark.parametrize("case,send,status,reason", [
    ("text-file", dict(files={"file": ("notes.txt", b"no picture here\n")}), 400,
     "notes.txt: not a readable image"),
    ("empty-body", dict(content=b""), 400, "empty, not an image"),
    ("cut-jpeg", dict(content=ASTRONAUT.read_bytes()[:5000]), 400, "not a readable image"),
    ("no-file-field", dict(files={"picture": ("a.jpg", b"x")}), 400, "multipart field 'file'"),
    ("unknown-markup", dict(content=ASTRONAUT.read_bytes(), params={"markup": "68pt"}), 400,
     "this model has course, 300w"),
    ("too-big-declared", dict(content=b"\xff" * (LIMIT_MB * 2**20 + 1)), 413, "limit of 1 MiB"),
    ("too-big-streamed", dict(content=(b"\xff" * 65536 for _ in range(LIMIT_MB * 16 + 1))), 413,
     "limit of 1 MiB"),
    # a header claiming 400 megapixels (over Pillow's own limit too)
    ("header-claims-400-megapixels", dict(files={"file": ("bomb.png",
                                                          png_claiming_size(20000, 20000))}),
     413, "bomb.png: image too large to read safely"),
    # a small file (a few KB) that decodes to 1.25 megapixels
    ("too-many-pixels", dict(files={"file": ("big.png", png(np.zeros((1000, 1250, 3), np.uint8)))}),
     413,
     "big.png: 1250 x 1000 px is over the limit of 1 megapixels"),
], ids=lambda v: v if isinstance(v, str) and " " not in v else None)
def test_a_bad_request_gets_its_status_and_one_line(server, case, send, status, reason):
    response = httpx.post(f"{server.url}/api/faces", timeout=60, **send)
    assert response.status_code == status, response.text
    assert reason in _one_line_detail(response)
    # and the server is fine afterwards
    assert httpx.post(f"{server.url}/api/faces", content=ASTRONAUT.read_bytes(),
                      timeout=60).json()["images"][0]["faces"]


@pytest.mark.parametrize("path,params,says", [
    ("/api/faces", {"detector": "dlib"},
     "query parameter detector: Input should be 'blazeface' or 'haar'"),
    ("/api/annotated", {"filter": "wig"}, "query parameter filter: Input should be "
                                          "'sunglasses', 'moustache', 'hat' or 'blur'")],
    ids=["detector", "filter"])
def test_an_unknown_option_is_refused_by_validation(server, path, params, says):
    response = httpx.post(server.url + path, params=params, content=ASTRONAUT.read_bytes())
    assert response.status_code == 422
    assert _one_line_detail(response) == says
    assert httpx.post(f"{server.url}/api/faces", content=ASTRONAUT.read_bytes(),
                      timeout=60).json()["images"][0]["faces"]


def test_the_server_reads_no_file_a_request_names(server):
    """An upload named after a real image on the server, holding text: if the server read the
    named file it would find a face; it reads the bytes sent, and says they are no image."""
    response = httpx.post(f"{server.url}/api/faces",
                          files={"file": (str(ASTRONAUT), b"not an image")})
    assert response.status_code == 400
    assert _one_line_detail(response).startswith("astronaut.jpg: not a readable image")


def _variants(astro):
    """Five different pictures and the faces each must give."""
    return [astro, astro[:, ::-1], np.rot90(astro).copy(), astro[40:400, 100:420],
            np.ascontiguousarray(np.pad(astro, ((100, 0), (0, 200), (0, 0))))]


def test_twenty_concurrent_requests_each_get_their_own_images_faces(server):
    pictures = [jpeg(np.ascontiguousarray(v)) for v in _variants(load_image(ASTRONAUT))]

    def ask(data):
        r = httpx.post(f"{server.url}/api/faces", content=data, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()["images"][0]

    alone = [ask(p) for p in pictures]
    assert all(len(a["faces"]) == 1 for a in alone)
    centres = {tuple(np.round(np.mean(a["faces"][0]["keypoints"], axis=0))) for a in alone}
    assert len(centres) == len(pictures)   # the five really differ
    order = [i % len(pictures) for i in range(20)]
    with ThreadPoolExecutor(20) as pool:
        together = list(pool.map(ask, [pictures[i] for i in order]))
    for i, entry in zip(order, together):
        assert (entry["width"], entry["height"]) == (alone[i]["width"], alone[i]["height"])
        assert_same_faces(entry, alone[i])


def test_the_annotated_picture_and_its_filter(server):
    def annotated(name, data, **params):
        r = httpx.post(f"{server.url}/api/annotated", params=params,
                       files={"file": (name, data)}, timeout=60)
        assert r.status_code == 200, r.text
        return r.headers["content-type"], np.asarray(Image.open(io.BytesIO(r.content)))

    astro = load_image(ASTRONAUT)
    kind, plain = annotated("a.jpg", ASTRONAUT.read_bytes())
    assert kind == "image/jpeg" and plain.shape == astro.shape
    kind, hat = annotated("a.png", png(astro), filter="hat")
    assert kind == "image/png" and hat.shape == astro.shape
    changed = np.any(hat != astro, axis=2)
    ys, xs = np.nonzero(changed)
    assert changed.mean() > 0.01 and ys.min() < 80   # a hat above the face (box top: y 80)
    assert 150 < xs.mean() < 300


def test_the_page_and_the_api_documents_load_nothing_from_elsewhere(server):
    for path in ("/", "/docs", "/redoc", "/static/app.js"):
        r = httpx.get(server.url + path)
        assert r.status_code == 200, path
        assert "https://" not in r.text and "http://" not in r.text.replace(
            "http://localhost", ""), path
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/api/faces", "/api/annotated", "/api/info"} <= set(spec["paths"])
    body = spec["paths"]["/api/faces"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "application/octet-stream" in body


def test_it_listens_on_localhost_unless_told(server):
    assert build_parser().parse_args([]).host == "127.0.0.1"
    assert server.url.startswith("http://127.0.0.1:")


def test_a_port_out_of_range_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["--port", "70000"])
    assert stop.value.code == 2
    assert "argument --port: must be at most 65535, got 70000" in capsys.readouterr().err


def test_a_port_in_use_is_one_line(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert fkp_serve(["--port", str(port)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"fkp-serve: error: port {port} on 127.0.0.1 is in use: choose another " \
                   f"with --port (0: any free port)"


def test_a_missing_model_is_one_line(tmp_path, capsys):
    assert fkp_serve(["--model", str(tmp_path / "none.pt")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("fkp-serve: error: ") and "none.pt" in line


# -- the camera socket (in-process) ------------------------------------------------------------
@pytest.fixture(scope="module")
def client():
    with TestClient(create_app()) as c:
        yield c


def moving_frames(n=24, step=6):
    """The bundled photo's face sliding right on a 480 x 360 frame: (JPEG bytes, x shift)."""
    astro = load_image(ASTRONAUT)[20:260, 110:350]
    for i in range(n):
        frame = np.full((360, 480, 3), 90, np.uint8)
        x = 40 + step * i
        frame[60:300, x:x + 240] = astro
        yield jpeg(frame, 90), x


def test_the_camera_socket_tracks_one_face_as_it_moves(client):
    with client.websocket_connect("/api/camera") as ws:
        centres, ids = [], set()
        for data, x in moving_frames():
            ws.send_bytes(data)
            reply = json.loads(ws.receive_text())
            assert reply["error"] is None and reply["picture"] is False
            (face,) = reply["faces"]
            ids.add(face["id"])
            centres.append((x, np.mean(face["keypoints"], axis=0)[0]))
        assert ids == {0}
        shift, found = np.array(centres).T
        # the points move with the face (smoothing may lag a little behind it)
        assert np.polyfit(shift, found, 1)[0] == pytest.approx(1.0, abs=0.15)
        assert np.abs(found - shift - np.median(found - shift)).max() < 12


def test_the_camera_socket_refuses_an_unknown_markup_with_its_reason(client):
    with client.websocket_connect("/api/camera?markup=68pt") as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 1008
    assert closed.value.reason == "markup '68pt': this model has course, 300w"


def test_the_camera_socket_sends_the_filtered_frame_and_survives_a_bad_one(client):
    (data, _), = list(moving_frames(n=1))
    with client.websocket_connect("/api/camera?filter=sunglasses") as ws:
        ws.send_bytes(data)
        assert json.loads(ws.receive_text())["picture"] is True
        picture = np.asarray(Image.open(io.BytesIO(ws.receive_bytes())))
        assert picture.shape == (360, 480, 3)
        ws.send_bytes(b"not a jpeg")
        reply = json.loads(ws.receive_text())
        assert reply["faces"] == [] and "not a readable image" in reply["error"]
        ws.send_text(json.dumps({"filter": None}))
        assert json.loads(ws.receive_text()) == {"filter": None}
        ws.send_text(json.dumps({"filter": "wig"}))
        assert "filter must be one of" in json.loads(ws.receive_text())["error"]
        ws.send_bytes(data)
        reply = json.loads(ws.receive_text())
        assert reply["picture"] is False and len(reply["faces"]) == 1
