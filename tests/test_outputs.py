"""``fkp-detect`` loses nothing and destroys nothing: one name per input for annotated copies,
no file it did not create overwritten, outputs checked before the work, an interrupted run
keeps its finished part, broken videos and broken models said out loud, strict JSON, given
boxes checked, many faces in bounded memory. (Threads: test_detect.py; a crafted ``last.pt``:
test_bad_data.py.)
"""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from types import SimpleNamespace

import cv2
import pytest
import torch

from facial_keypoints import KeypointPipeline, cli, images
from facial_keypoints.cli import detect as detect_cmd
from facial_keypoints.keypoints import checkpoints, nets
from helpers_keypoints import ENV, ROOT, TINY_INPUT, listing, save_rgb, write_video


def strict_json(text):
    """JSON as a strict parser reads it: NaN or Infinity is an error."""
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def face_jpg(tmp_path, astronaut):
    path = tmp_path / "in" / "face.jpg"
    save_rgb(path, cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA))
    return path


def detect(*args):
    return detect_cmd.main([*map(str, args), "--quiet"])


# --------------------------------------------------------------------------------------------
# Annotated copies: one per input, never over a file the run did not create
# --------------------------------------------------------------------------------------------
def test_two_inputs_of_one_name_get_two_annotated_copies(tmp_path, tiny_ckpt, astronaut):
    a, b = tmp_path / "a" / "face.jpg", tmp_path / "b" / "face.jpg"
    save_rgb(a, astronaut[:300])
    save_rgb(b, astronaut[200:])
    write_video(tmp_path / "clip.mp4", astronaut, 3, size=96)
    write_video(tmp_path / "clip.avi", astronaut, 3, size=96, fourcc="MJPG")
    out, result = tmp_path / "out", tmp_path / "r.json"
    assert detect(a, b, tmp_path / "clip.mp4", tmp_path / "clip.avi", "--model", tiny_ckpt,
                  "--annotate", out, "--json", result) == 0
    assert listing(out) == ["clip_keypoints.mp4", "clip_keypoints_2.mp4", "face_keypoints.jpg",
                            "face_keypoints_2.jpg"]
    entries = json.loads(result.read_text())["images"]
    named = {e["path"]: e["annotated"] for e in entries if "annotated" in e}
    assert named == {str(a): str(out / "face_keypoints.jpg"),
                     str(b): str(out / "face_keypoints_2.jpg"),
                     str(tmp_path / "clip.mp4"): str(out / "clip_keypoints.mp4"),
                     str(tmp_path / "clip.avi"): str(out / "clip_keypoints_2.mp4")}
    assert images.load_image(out / "face_keypoints.jpg").shape[0] == 300   # a's, not b's


def test_the_users_own_file_is_never_overwritten(tmp_path, tiny_ckpt, face_jpg, capsys):
    folder = face_jpg.parent
    mine = folder / "face_keypoints.jpg"
    mine.write_bytes(b"the user's own file")
    t0 = time.perf_counter()
    assert detect(folder, "--model", tiny_ckpt, "--annotate", folder) == 2
    assert time.perf_counter() - t0 < 1.0          # refused before any work
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err and "--overwrite" in err
    assert mine.read_bytes() == b"the user's own file"
    assert listing(folder) == ["face.jpg", "face_keypoints.jpg"]


def test_annotating_into_the_input_folder_twice_adds_no_keypoints_keypoints(tmp_path, tiny_ckpt,
                                                                            face_jpg):
    folder = face_jpg.parent
    for _ in range(2):
        assert detect(folder, "--model", tiny_ckpt, "--annotate", folder, "--overwrite") == 0
    assert listing(folder) == ["face.jpg", "face_keypoints.jpg"]


def test_json_is_not_replaced_without_overwrite_and_keeps_mode_and_link(tmp_path, tiny_ckpt,
                                                                         face_jpg, capsys):
    real = tmp_path / "real.json"
    real.write_text("{}")
    os.chmod(real, 0o600)
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert detect(face_jpg, "--model", tiny_ckpt, "--json", link) == 2
    assert "already exists" in capsys.readouterr().err and real.read_text() == "{}"
    assert detect(face_jpg, "--model", tiny_ckpt, "--json", link, "--overwrite") == 0
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert strict_json(real.read_text())["complete"] is True


# --------------------------------------------------------------------------------------------
# Outputs checked before the work: one line, exit 2, in well under a second
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["under_a_file", "annotate_is_a_file", "proc"])
def test_unwritable_output_is_found_before_the_work(tmp_path, tiny_ckpt, face_jpg, capsys,
                                                    monkeypatch, where):
    def no_work(*args, **kwargs):
        raise AssertionError("the work started")
    monkeypatch.setattr(detect_cmd, "KeypointPipeline", no_work)   # not even the model
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    option = {"under_a_file": ["--json", a_file / "out.json"],
              "annotate_is_a_file": ["--annotate", a_file],
              "proc": ["--json", "/proc/fkp-test/out.json"]}[where]   # no one writes there
    t0 = time.perf_counter()
    assert detect(face_jpg, "--model", tiny_ckpt, *option) == 2
    assert time.perf_counter() - t0 < 1.0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fkp-detect: error: ") and option[0] in err


# --------------------------------------------------------------------------------------------
# Interrupted runs: one line, the finished part kept, an earlier annotated video intact
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def long_clip(tmp_path_factory, astronaut):
    path = tmp_path_factory.mktemp("long") / "clip.mp4"
    write_video(path, astronaut, 1500, size=96)
    return path


def _ctrl_c_as_in_a_terminal():
    # A shell without job control starts `cmd &` with SIGINT ignored, and a child inherits
    # that: Python then installs no KeyboardInterrupt handler. Where the tests themselves run
    # in the background (seen: the CI script started with `&`), the command would never see
    # the Ctrl-C these tests send it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_detect(*args):
    return subprocess.Popen([sys.executable, "detect.py", *map(str, args)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_ctrl_c_as_in_a_terminal)


def wait_for(condition, proc, timeout=60):
    t0 = time.time()
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, "the run did not start"
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, name", [(signal.SIGTERM, 143, "SIGTERM"),
                                             (signal.SIGINT, 130, "Ctrl-C")])
def test_interrupted_run_keeps_the_finished_part_and_the_earlier_video(
        tmp_path, tiny_ckpt, long_clip, sig, code, name):
    out, result = tmp_path / "out", tmp_path / "r.json"
    out.mkdir()
    earlier = out / "clip_keypoints.mp4"
    earlier.write_bytes(b"a complete annotated video from an earlier run")
    proc = start_detect(long_clip, "--model", tiny_ckpt, "--annotate", out, "--json", result,
                        "--overwrite", "--track-every", "1", "--quiet")
    wait_for(lambda: any(p.name.startswith(".clip_keypoints") for p in out.iterdir()), proc)
    time.sleep(0.5)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and stderr.count("\n") == 1
    assert f"interrupted ({name})" in stderr
    assert earlier.read_bytes() == b"a complete annotated video from an earlier run"
    assert listing(out) == ["clip_keypoints.mp4"]              # no temporary file left
    document = strict_json(result.read_text())
    assert document["complete"] is False
    frames = [e["frame"] for e in document["images"]]
    assert frames and frames == list(range(len(frames))) and len(frames) < 1500


@pytest.mark.slow
def test_json_lines_are_written_as_the_run_goes(tmp_path, tiny_ckpt, long_clip):
    result = tmp_path / "r.jsonl"
    proc = start_detect(long_clip, "--model", tiny_ckpt, "--json", result, "--quiet")
    wait_for(lambda: result.exists() and result.read_text().count("\n") >= 5, proc)
    proc.kill()                                   # not even a chance to clean up
    proc.communicate()
    lines = result.read_text().splitlines()
    complete = lines if result.read_text().endswith("\n") else lines[:-1]
    assert len(complete) >= 5
    assert [strict_json(line)["frame"] for line in complete] == list(range(len(complete)))


def test_no_output_option_prints_json_lines(tmp_path, tiny_ckpt, face_jpg, capsys):
    assert detect(face_jpg, "--model", tiny_ckpt) == 0
    out = capsys.readouterr().out
    (entry,) = [strict_json(line) for line in out.splitlines()]
    assert entry["path"] == str(face_jpg) and entry["width"] == 128
    assert detect(face_jpg, "--model", tiny_ckpt, "--json", "-") == 0
    assert strict_json(capsys.readouterr().out) == entry
    assert not (ROOT / "-").exists()


# --------------------------------------------------------------------------------------------
# Broken videos, broken models, odd inputs
# --------------------------------------------------------------------------------------------
def test_a_video_cut_short_is_an_error(tmp_path, tiny_ckpt, astronaut, capsys):
    whole = tmp_path / "whole.avi"
    write_video(whole, astronaut, 60, size=96, fourcc="MJPG")
    cut = tmp_path / "cut.avi"
    data = whole.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    result = tmp_path / "r.json"
    assert detect_cmd.main([str(cut), "--model", str(tiny_ckpt), "--json", str(result)]) == 1
    *frames, video = strict_json(result.read_text())["images"]
    assert 0 < len(frames) < 60
    assert video["frames_expected"] == 60 and video["frames_read"] == len(frames)
    assert "60 frames" in video["error"] and "cut short or damaged" in video["error"]
    assert "cut short or damaged" in capsys.readouterr().err


@pytest.fixture(scope="module")
def nan_ckpt(tmp_path_factory):
    """A checkpoint whose every output is NaN."""
    model = nets.ResNet18Keypoints(width=8)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    meta = checkpoints.checkpoint_meta(arch="resnet18", arch_args={"width": 8},
                                       input_size=TINY_INPUT, crop_scale=1.3,
                                       kp_mean=TINY_INPUT / 2, kp_std=TINY_INPUT / 4,
                                       command="tests: a broken model")
    path = tmp_path_factory.mktemp("nan") / "nan.pt"
    checkpoints.save_checkpoint(path, model, meta)
    return path


def test_non_finite_keypoints_give_strict_json_and_an_error(tmp_path, nan_ckpt, face_jpg,
                                                            capsys):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({str(face_jpg): [[30, 30, 60, 60]]}))
    result = tmp_path / "r.json"
    assert detect(face_jpg, "--model", nan_ckpt, "--boxes", boxes, "--json", result,
                  "--annotate", tmp_path / "out") == 1
    (entry,) = strict_json(result.read_text())["images"]
    (face,) = entry["faces"]
    assert face["keypoints"] is None and "not finite" in face["error"]
    assert face["box"] == [30, 30, 60, 60]


@pytest.mark.parametrize("box", [[0, 0, 1e300, 1e300], [1e300, 0, 50, 50], [0, 0, 1e-300, 5]])
def test_absurd_boxes_are_refused_in_one_line(tmp_path, tiny_ckpt, face_jpg, capsys, box):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({str(face_jpg): [[10, 10, 50, 50], box]}))
    assert detect(face_jpg, "--model", tiny_ckpt, "--boxes", boxes) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(boxes) in err and "box 1 is" in err
    pipe = KeypointPipeline(tiny_ckpt)
    with pytest.raises(ValueError, match="box 0 is"):
        pipe.get_landmarks(images.load_image(face_jpg), boxes=[box])


@pytest.mark.slow
def test_many_boxes_on_one_image_take_bounded_memory():
    """1,000 given boxes take about the memory of 64 (the shipped model; the crops go through
    the network in chunks)."""
    script = (   # VmHWM: this process's peak memory (ru_maxrss would count pytest's too)
        "import re, sys\n"
        "from pathlib import Path\n"
        "from facial_keypoints import KeypointPipeline\n"
        "from facial_keypoints.images import load_image\n"
        "from facial_keypoints.paths import DEFAULT_PHOTO\n"
        "n = int(sys.argv[1])\n"
        "pipe = KeypointPipeline()\n"
        "boxes = [[100 + i % 10, 60 + i % 7, 200, 200] for i in range(n)]\n"
        "faces = pipe.get_landmarks(load_image(DEFAULT_PHOTO), boxes=boxes)\n"
        "status = Path('/proc/self/status').read_text()\n"
        "print(len(faces), int(re.search(r'VmHWM:\\s+(\\d+)', status)[1]) // 1024)\n")
    peak = {}
    for n in (64, 1000):
        proc = subprocess.run([sys.executable, "-c", script, str(n)], cwd=ROOT, env=ENV,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        found, peak[n] = map(int, proc.stdout.split())
        assert found == n
    assert peak[1000] - peak[64] < 150, peak       # MB


def test_a_pipe_named_jpg_is_refused_not_waited_on(tmp_path, tiny_ckpt):
    fifo = tmp_path / "stream.jpg"
    os.mkfifo(fifo)
    result = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "detect.py", str(fifo), "--model", str(tiny_ckpt),
                           "--json", str(result), "--quiet"], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    (entry,) = strict_json(result.read_text())["images"]
    assert "not a regular file" in entry["error"]


@pytest.mark.parametrize("option", [["--track-every", "0"], ["--batch", "0"],
                                    ["--workers", "-1"], ["--batch", "many"]])
def test_argument_ranges_are_usage_errors(tiny_ckpt, face_jpg, capsys, option):
    with pytest.raises(SystemExit) as e:
        detect(face_jpg, "--model", tiny_ckpt, *option)
    assert e.value.code == 2
    assert f"argument {option[0]}" in capsys.readouterr().err


def test_a_boxes_file_that_is_not_utf8_is_named(tmp_path, tiny_ckpt, face_jpg, capsys):
    boxes = tmp_path / "boxes.json"
    boxes.write_bytes(b'{"\xff\xfe": [[1, 2, 3, 4]]}')
    assert detect(face_jpg, "--model", tiny_ckpt, "--boxes", boxes) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(boxes) in err and "UTF-8" in err


# --------------------------------------------------------------------------------------------
# Every command: Ctrl-C or SIGTERM is one line and exit status 130 or 143
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how, code, name", [("ctrl-c", 130, "Ctrl-C"), ("term", 143, "SIGTERM")])
def test_commands_stopped_say_so_in_one_line(monkeypatch, capsys, how, code, name):
    def main(argv):
        if how == "ctrl-c":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM was not handled")

    real = cli.importlib.import_module
    monkeypatch.setattr(cli.importlib, "import_module",
                        lambda name: SimpleNamespace(main=main) if name.endswith(".train")
                        else real(name))
    before = signal.getsignal(signal.SIGTERM)
    assert cli.fkp_train([]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"fkp-train: interrupted ({name}): ")
    assert "--resume" in err
    assert signal.getsignal(signal.SIGTERM) == before       # put back
