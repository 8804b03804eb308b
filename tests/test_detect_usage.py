"""``fkp-detect`` as a user expects it: folders searched recursively when asked (and what was
skipped said), outputs relative to the current folder, defaults shown in ``--help``,
``--version``, and the drawn box the face's own (brow to chin, ear to ear, turned with it).
JSON on standard output and JSON Lines: test_outputs.py.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import face_layout
from facial_keypoints import __version__, batch
from facial_keypoints.cli import detect as detect_cmd
from facial_keypoints.filters.drawing import draw_faces
from facial_keypoints.geometry import face_outline
from facial_keypoints.keypoints.pipeline import Face
from helpers_keypoints import save_rgb


@pytest.fixture
def tree(tmp_path, astronaut):
    small = cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA)
    root = tmp_path / "photos"
    save_rgb(root / "a.jpg", small)
    save_rgb(root / "sub" / "b.jpg", small)
    save_rgb(root / "sub" / "deeper" / "c.png", small)
    save_rgb(root / ".hidden" / "d.jpg", small)
    (root / "notes.txt").write_text("not a picture")
    return root


def test_recursive_finds_subfolders_and_without_it_says_what_was_skipped(tree, tiny_ckpt,
                                                                         capsys):
    out = tree.parent / "r.json"
    assert detect_cmd.main([str(tree), "--model", str(tiny_ckpt), "--json", str(out)]) == 0
    err = capsys.readouterr().err
    assert "subfolder(s) not searched (add --recursive)" in err and "notes.txt" in err
    assert [e["path"] for e in json.loads(out.read_text())["images"]] == [str(tree / "a.jpg")]
    assert detect_cmd.main([str(tree), "-r", "--model", str(tiny_ckpt), "--json", str(out),
                            "--overwrite", "--quiet"]) == 0
    assert [e["path"] for e in json.loads(out.read_text())["images"]] == [
        str(tree / "a.jpg"), str(tree / "sub" / "b.jpg"), str(tree / "sub" / "deeper" / "c.png")]


def test_hidden_files_and_earlier_temporaries_are_not_inputs(tree):
    (tree / ".a_keypoints.x1y2.tmp.jpg").write_bytes(b"left by a killed run")
    assert batch.expand_inputs([tree]) == [str(tree / "a.jpg")]


def test_outputs_go_to_the_current_folder(tmp_path, tiny_ckpt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert detect_cmd.main(["--model", str(tiny_ckpt), "--quiet"]) == 0   # the bundled photo
    assert (tmp_path / "out" / "annotated" / "astronaut_keypoints.jpg").is_file()


def test_help_shows_defaults_and_version(capsys):
    with pytest.raises(SystemExit):
        detect_cmd.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("default: blazeface", "default: 10", "default: 8", "default: 1)",
                    "default: the shipped model", "the model's own threshold"):
        assert default in text, default
    with pytest.raises(SystemExit) as e:
        detect_cmd.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"fkp-detect {__version__}"


@pytest.mark.parametrize("roll", [0.0, 35.0, -120.0])
def test_the_drawn_box_is_the_faces_own(roll):
    """Brow to chin and ear to ear, turned with the face: every keypoint inside it, each side
    touching one; not the detector's box (here one far off)."""
    pts = face_layout(center=(90, 100), width=80).astype(np.float64)
    a = np.radians(roll)
    turn = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    pts = (pts - [90, 100]) @ turn.T + [90, 100]
    corners = face_outline(pts)
    edges = np.roll(corners, -1, axis=0) - corners
    inside = [e[0] * (pts - c)[:, 1] - e[1] * (pts - c)[:, 0]      # >= 0: inside each edge
              for c, e in zip(corners, edges)]
    assert all((s >= -1e-6).all() and s.min() < 1e-6 for s in inside)
    face = Face(np.array([0.0, 0.0, 10.0, 10.0]), pts, 0.9, 0.9, roll)
    drawn = draw_faces(np.zeros((200, 180, 3), np.uint8), [face])
    green = np.all(drawn == [0, 255, 0], axis=2)
    assert not green[:10, :10].any()                          # not the detector's box
    for corner in corners:                                    # the outline's corners are drawn
        x, y = np.clip(np.round(corner).astype(int), 0, [179, 199])
        assert green[max(y - 2, 0):y + 3, max(x - 2, 0):x + 3].any()
