"""Tests of ``fkp-detect`` (``python detect.py``): one real run over good and bad inputs of
every kind, then the same contract in-process (``cli.detect.main``), ``--filter`` and the usage
errors. The pipeline and the detectors beneath it are test_detect.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from facial_keypoints import batch, images, paths
from facial_keypoints.cli import detect as detect_cmd
from helpers_keypoints import (
    ASTRONAUT_BLAZEFACE_BOX,
    ROOT,
    iou,
    save_rgb,
    write_video,
)


# --------------------------------------------------------------------------------------------
# The command, as a real subprocess: one run over good and bad inputs of every kind
# --------------------------------------------------------------------------------------------
def run_cli(*args, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "detect.py", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


N_FRAMES = 8


def video_frames(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, tiny_ckpt, astronaut):
    """One run of the command over good and bad inputs of every kind."""
    tmp = tmp_path_factory.mktemp("cli_mixed")
    save_rgb(tmp / "astro.jpg", astronaut)
    save_rgb(tmp / "astro2.jpg", astronaut)
    save_rgb(tmp / "blank.png", np.zeros((64, 80, 3), np.uint8))
    folder = tmp / "folder"
    folder.mkdir()
    save_rgb(folder / "b_face.png", cv2.resize(astronaut, (300, 300), interpolation=cv2.INTER_AREA))
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    assert cv2.imwrite(str(folder / "a_gray.jpg"), gray)
    (folder / "readme.txt").write_text("not an image")
    (tmp / "notes.jpg").write_text("this is text, not a JPEG")
    (tmp / "empty.jpg").write_bytes(b"")
    write_video(tmp / "clip.mp4", astronaut, N_FRAMES)
    inputs = {
        "astro": f"{tmp}/./astro.jpg",            # kept exactly as given in the JSON
        "folder": str(folder),
        "notes": str(tmp / "notes.jpg"),
        "empty": str(tmp / "empty.jpg"),
        "missing": str(tmp / "missing.png"),
        "blank": str(tmp / "blank.png"),
        "astro2": str(tmp / "astro2.jpg"),
        "video": str(tmp / "clip.mp4"),
    }
    boxes = {inputs["blank"]: [[5, 6, 30, 30], [20, 22, 10, 12]],
             inputs["astro2"]: [[10, 20, 50, 50]]}
    (tmp / "boxes.json").write_text(json.dumps(boxes))
    out_json, annotate = tmp / "out" / "result.json", tmp / "annotated"
    proc = run_cli(*inputs.values(), "--model", tiny_ckpt, "--json", out_json,
                   "--annotate", annotate, "--boxes", tmp / "boxes.json", "--quiet")
    assert out_json.is_file(), proc.stderr
    result = json.loads(out_json.read_text())
    by_path = {}
    for e in result["images"]:
        by_path.setdefault(e["path"], []).append(e)
    return {"proc": proc, "result": result, "by_path": by_path, "inputs": inputs, "tmp": tmp,
            "annotate": annotate, "boxes": boxes, "model": str(tiny_ckpt)}


def check_face_json(face, video=False):
    """The JSON contract of a face: the old keys as they were, the new ones beside them."""
    assert set(face) == {"box", "keypoints", "score", "confidence", "roll"} | (
        {"id"} if video else set())
    assert len(face["box"]) == 4 and all(isinstance(v, (int, float)) for v in face["box"])
    assert len(face["keypoints"]) == 68
    assert all(len(p) == 2 and all(np.isfinite(p)) for p in face["keypoints"])
    for key in ("score", "confidence"):
        assert face[key] is None or isinstance(face[key], float)
    assert face["confidence"] is None or 0 <= face["confidence"] <= 1
    assert isinstance(face["roll"], float) and -180 <= face["roll"] <= 180
    assert not video or isinstance(face["id"], int)


@pytest.mark.slow
def test_cli_mixed_inputs_exit_1_and_every_input_has_an_entry(mixed_run):
    proc, inputs, by_path = mixed_run["proc"], mixed_run["inputs"], mixed_run["by_path"]
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""                       # --quiet: no summary, no progress bars
    folder = inputs["folder"]
    expected_paths = [inputs["astro"], f"{folder}/a_gray.jpg", f"{folder}/b_face.png",
                      inputs["notes"], inputs["empty"], inputs["missing"], inputs["blank"],
                      inputs["astro2"]] + [inputs["video"]] * (N_FRAMES + 1)  # + its own
    assert [e["path"] for e in mixed_run["result"]["images"]] == expected_paths
    assert mixed_run["result"]["model"] == mixed_run["model"]
    for key in ("notes", "empty", "missing"):
        (entry,) = by_path[inputs[key]]
        assert entry["faces"] == [] and isinstance(entry["error"], str) and entry["error"]
        assert entry["width"] is None and entry["height"] is None
    assert "no such file" in by_path[inputs["missing"]][0]["error"]


def test_cli_json_layout_of_good_images(mixed_run):
    inputs, by_path = mixed_run["inputs"], mixed_run["by_path"]
    assert set(mixed_run["result"]) == {"model", "images", "complete"}
    assert mixed_run["result"]["complete"] is True
    for path, (w, h) in [(inputs["astro"], (512, 512)),
                         (f"{inputs['folder']}/a_gray.jpg", (512, 512)),
                         (f"{inputs['folder']}/b_face.png", (300, 300))]:
        (entry,) = by_path[path]
        assert set(entry) == {"path", "width", "height", "faces", "error", "annotated"}
        assert entry["annotated"].endswith("_keypoints" + os.path.splitext(path)[1])
        assert entry["error"] is None and (entry["width"], entry["height"]) == (w, h)
        assert len(entry["faces"]) >= 1, path
        for face in entry["faces"]:
            check_face_json(face)
    (astro,) = by_path[inputs["astro"]]   # the photo as re-encoded: about the same box
    assert len(astro["faces"]) == 1
    assert iou(astro["faces"][0]["box"], ASTRONAUT_BLAZEFACE_BOX) > 0.9


def test_cli_boxes_skip_detection(mixed_run):
    inputs, by_path = mixed_run["inputs"], mixed_run["by_path"]
    (blank,) = by_path[inputs["blank"]]
    assert [f["box"] for f in blank["faces"]] == mixed_run["boxes"][inputs["blank"]]
    (astro2,) = by_path[inputs["astro2"]]   # Haar would find the face at (176, 65)
    assert [f["box"] for f in astro2["faces"]] == [[10, 20, 50, 50]]
    for face in blank["faces"] + astro2["faces"]:
        check_face_json(face)


def test_cli_annotates_every_readable_input(mixed_run):
    annotate = mixed_run["annotate"]
    names = sorted(p.name for p in annotate.iterdir())
    assert names == sorted(["astro_keypoints.jpg", "astro2_keypoints.jpg", "a_gray_keypoints.jpg",
                            "b_face_keypoints.png", "blank_keypoints.png", "clip_keypoints.mp4"])
    drawn = images.load_image(annotate / "blank_keypoints.png")
    assert drawn.shape == (64, 80, 3)
    assert drawn.max() > 0        # the faces (their own boxes: test_detect_usage.py)
    astro = images.load_image(annotate / "astro_keypoints.jpg")
    original = images.load_image(mixed_run["tmp"] / "astro.jpg")
    assert astro.shape == original.shape
    assert np.abs(astro.astype(int) - original).max() > 100   # something was drawn


def test_cli_video_gives_one_entry_per_frame_and_one_for_the_video(mixed_run):
    *frames, video = mixed_run["by_path"][mixed_run["inputs"]["video"]]
    assert video == {"path": mixed_run["inputs"]["video"], "frame": None, "width": 200,
                     "height": 200, "faces": [], "fps": 10.0, "frames_expected": N_FRAMES,
                     "frames_read": N_FRAMES, "annotated": str(mixed_run["annotate"] /
                                                               "clip_keypoints.mp4"),
                     "error": None}
    assert [e["frame"] for e in frames] == list(range(N_FRAMES))
    for e in frames:
        assert set(e) == {"path", "frame", "width", "height", "faces", "error"}
        assert e["error"] is None and (e["width"], e["height"]) == (200, 200)
        for face in e["faces"]:
            check_face_json(face, video=True)
    assert sum(len(e["faces"]) for e in frames) >= N_FRAMES // 2   # the face is found
    assert len({f["id"] for e in frames for f in e["faces"]}) == 1  # one face, one identity
    out = video_frames(mixed_run["annotate"] / "clip_keypoints.mp4")
    assert len(out) == N_FRAMES and out[0].shape == (200, 200, 3)


# --------------------------------------------------------------------------------------------
# The command, in-process: detect.main is what `python detect.py` runs (sys.exit(main())), so
# these check the same contract without paying for another interpreter start (~10 s here)
# --------------------------------------------------------------------------------------------
@pytest.fixture
def good_image(tmp_path, astronaut):
    path = tmp_path / "face.png"
    save_rgb(path, cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA))
    return str(path)


def test_main_all_good_inputs_exit_0(tmp_path, tiny_ckpt, good_image, capsys):
    out = tmp_path / "r.json"
    boxes = tmp_path / "b.json"
    boxes.write_text(json.dumps({good_image: [[40, 15, 30, 30]]}))
    second = tmp_path / "second.png"
    save_rgb(second, np.zeros((50, 60, 3), np.uint8))       # no face: still not an error
    code = detect_cmd.main([good_image, str(second), "--model", str(tiny_ckpt), "--json", str(out),
                        "--boxes", str(boxes), "--quiet"])
    assert code == 0
    entries = json.loads(out.read_text())["images"]
    assert [e["path"] for e in entries] == [good_image, str(second)]
    assert len(entries[0]["faces"]) == 1 and entries[1]["faces"] == []
    assert all(e["error"] is None for e in entries)


def test_main_without_paths_processes_the_bundled_photo(tmp_path, tiny_ckpt, capsys):
    out_json = tmp_path / "demo.json"
    code = detect_cmd.main(["--model", str(tiny_ckpt), "--annotate", str(tmp_path / "ann"),
                        "--json", str(out_json), "--flip-tta", "--quiet"])
    assert code == 0
    result = json.loads(out_json.read_text())
    (entry,) = result["images"]
    assert entry["path"] == str(paths.DEFAULT_PHOTO) and entry["error"] is None
    assert (entry["width"], entry["height"]) == (512, 512) and len(entry["faces"]) == 1
    annotated = tmp_path / "ann" / "astronaut_keypoints.jpg"
    assert images.load_image(annotated).shape == (512, 512, 3)
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == ["astronaut_keypoints.jpg"]


def test_main_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exc:
        detect_cmd.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fkp-detect")
    for option in ("--json", "--annotate", "--boxes", "--model", "--flip-tta", "PATH"):
        assert option in out, option


def test_main_unknown_option_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        detect_cmd.main(["--no-such-option"])
    assert exc.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_main_unusable_model_file_exits_2(tmp_path, good_image, capsys):
    """A missing or damaged --model: exit status 2 and one clear line, no traceback (main
    returns instead of raising)."""
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"\x00garbage" * 10)
    for model in (tmp_path / "missing.pt", damaged):
        assert detect_cmd.main([good_image, "--model", str(model), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("fkp-detect: error:") and str(model) in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("content", [
    "{not json",                                   # not JSON
    "[[1, 2, 3, 4]]",                              # not a mapping
    '{"%s": [[0, 0, -5, 10]]}',                   # negative width
    '{"%s": [[0, 0, 10]]}',                       # three numbers
    '{"%s": {"x": 1}}',                           # not a list of boxes
    '{"%s": "abc"}',
])
def test_main_malformed_boxes_file_exits_2(tmp_path, tiny_ckpt, good_image, capsys, content):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(content.replace("%s", good_image))
    code = detect_cmd.main([good_image, "--model", str(tiny_ckpt), "--boxes", str(boxes),
                            "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("fkp-detect: error:") and "boxes" in err


def test_main_missing_boxes_file_exits_2(tmp_path, tiny_ckpt, good_image, capsys):
    code = detect_cmd.main([good_image, "--model", str(tiny_ckpt), "--boxes",
                        str(tmp_path / "none.json"), "--quiet"])
    assert code == 2
    assert "--boxes" in capsys.readouterr().err


def test_expand_inputs_keeps_order_and_expands_folders(tmp_path):
    (tmp_path / "d").mkdir()
    for name in ("b.JPG", "a.png", "c.mp4", "notes.txt"):
        (tmp_path / "d" / name).write_bytes(b"x")
    (tmp_path / "d" / "sub.jpg").mkdir()          # a folder named like an image
    items = batch.expand_inputs(["z.jpg", str(tmp_path / "d"), "missing.png"])
    assert items == ["z.jpg", str(tmp_path / "d" / "a.png"), str(tmp_path / "d" / "b.JPG"),
                     str(tmp_path / "d" / "c.mp4"), "missing.png"]


# --------------------------------------------------------------------------------------------
# --filter, and usage errors found by the bad-input review
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sunglasses", "moustache", "hat", "blur"])
def test_main_filter_draws_on_the_face_of_an_image(tmp_path, astronaut, name, capsys):
    """Each filter changes the picture around the face and leaves far corners alone."""
    src = tmp_path / "astronaut.png"
    save_rgb(src, astronaut)
    face_box = [176, 65, 97, 97]          # the astronaut's face, skip detection
    boxes = tmp_path / "b.json"
    boxes.write_text(json.dumps({str(src): [face_box]}))
    out = tmp_path / "out"
    code = detect_cmd.main([str(src), "--boxes", str(boxes), "--annotate", str(out),
                            "--filter", name,
                        "--quiet"])
    assert code == 0
    drawn = cv2.cvtColor(cv2.imread(str(out / "astronaut_keypoints.png")), cv2.COLOR_BGR2RGB)
    diff = np.abs(drawn.astype(int) - astronaut.astype(int)).sum(axis=2)
    x, y, w, h = face_box
    near = diff[max(0, y - h):y + 2 * h, max(0, x - w):x + 2 * w]
    assert (near > 30).sum() > 200, f"{name} drew nothing near the face"
    assert diff[-60:, -60:].max() == 0 and diff[:40, :40].max() == 0, "drawn far from the face"


@pytest.mark.parametrize("name", ["sunglasses", "moustache", "hat", "blur"])
def test_main_filter_on_a_video(tmp_path, astronaut, name, capsys):
    """End to end with the shipped model: the filter is drawn on every frame with a face."""
    video = tmp_path / "clip.mp4"
    write_video(video, astronaut, N_FRAMES, size=320)
    out = tmp_path / "out"
    code = detect_cmd.main([str(video), "--annotate", str(out), "--filter", name, "--quiet",
                        "--json", str(tmp_path / "v.json")])
    assert code == 0
    frames = video_frames(out / "clip_keypoints.mp4")
    plain = video_frames(video)
    assert len(frames) == N_FRAMES
    entries = json.loads((tmp_path / "v.json").read_text())["images"]
    with_face = [e["frame"] for e in entries if e["faces"]]
    assert len(with_face) >= N_FRAMES - 1, "the face should be found in the clip's frames"
    for k in with_face:
        changed = np.abs(frames[k].astype(int) - plain[k].astype(int)).max(axis=2) > 40
        assert changed.sum() > 100, f"{name} was not drawn on frame {k}"
    entries = json.loads((tmp_path / "v.json").read_text())["images"]
    assert [e["frame"] for e in entries] == list(range(N_FRAMES)) + [None]


def test_main_filter_needs_annotate(tmp_path, tiny_ckpt, good_image, capsys):
    with pytest.raises(SystemExit) as e:
        detect_cmd.main([good_image, "--model", str(tiny_ckpt), "--filter", "hat"])
    assert e.value.code == 2
    assert "--annotate" in capsys.readouterr().err


def test_main_json_pointing_at_a_folder_is_a_usage_error(tmp_path, tiny_ckpt, good_image, capsys):
    assert detect_cmd.main([good_image, "--model", str(tiny_ckpt), "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_main_folder_without_images_is_reported(tmp_path, tiny_ckpt, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no pictures here")
    out = tmp_path / "r.json"
    code = detect_cmd.main([str(empty), "--model", str(tiny_ckpt), "--json", str(out), "--quiet"])
    assert code == 1
    (entry,) = json.loads(out.read_text())["images"]
    assert entry["faces"] == [] and "no image" in entry["error"]
