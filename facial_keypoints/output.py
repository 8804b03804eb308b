"""Where ``fkp-detect``'s results go, without losing or destroying anything.

* Every output is checked before the work starts (``check_json_target``,
  ``check_annotate_folder``, ``annotated_names``): a folder where a file is wanted, a folder
  that cannot be written, a file that already exists (without ``--overwrite``) is one line and
  exit status 2 before a single image is read.
* Annotated copies get one name per input (``face_keypoints.jpg``, then
  ``face_keypoints_2.jpg`` for a second ``face.jpg``), and a folder that is also the
  ``--annotate`` folder does not take its earlier annotated copies for inputs.
* The JSON (``Results``) is written as the work goes: a ``.json`` document to a temporary file
  put in place at the end, also when the run is interrupted (then ``"complete": false``);
  JSON Lines (``.jsonl``, or ``-``: standard output) one entry per line, flushed as each is
  done, so a killed run keeps what was done. Numbers are compact and the JSON strict (a NaN
  raises here instead of writing what strict parsers reject; ``Face.to_json`` reports a face
  whose keypoints are not finite with an ``error``).
"""
from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path

from facial_keypoints.files import commit, temp_beside

#: The stem of an annotated copy: ``<input stem>_keypoints`` or ``..._keypoints_<n>``.
ANNOTATED_STEM = re.compile(r"_keypoints(_\d+)?$")
#: Formats an annotated image keeps; any other image is annotated as PNG, a video as MP4.
ANNOTATED_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class OutputError(ValueError):
    """An output that cannot be written, or that would replace a file this run did not
    create; the message says which and what to do."""


# --------------------------------------------------------------------------------------------
# Checks before the work
# --------------------------------------------------------------------------------------------
def _check_can_write_in(folder: Path, option: str, given):
    """``folder``, or the nearest folder above it that exists (the rest is made later), is a
    folder that takes a new file: tried with a real temporary file, as permissions alone do
    not tell (a read-only file system, an administrator's account)."""
    existing = folder
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{option} {given}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise OutputError(f"{option} {given}: cannot write in {existing} "
                          f"({e.strerror or e}): choose a folder you can write to") from None


def check_json_target(path, overwrite=False):
    """Check before the work that ``--json path`` can be written (``-``: standard output)."""
    if path is None or path == "-":
        return
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"--json {path} is a folder: give a file name, e.g. {p / 'out.json'}")
    if os.path.lexists(p) and not overwrite:
        raise OutputError(f"--json {path} already exists: pass --overwrite to replace it, or "
                          f"choose another name")
    if os.path.lexists(p) and not p.is_file():
        raise OutputError(f"--json {path} is not a regular file: choose another name")
    _check_can_write_in(Path(os.path.realpath(p)).parent, "--json", path)


def check_annotate_folder(path):
    """Check before the work that annotated copies can be written in the folder ``path``."""
    p = Path(path)
    if os.path.lexists(p) and not p.is_dir():
        raise OutputError(f"--annotate {path} is a file, not a folder: give a folder for the "
                          f"annotated copies")
    _check_can_write_in(p, "--annotate", path)


def annotated_names(items, out_dir, is_video, overwrite=False) -> dict[str, Path]:
    """The annotated copy of each input (``items``: paths in the order they are processed):
    ``<stem>_keypoints<suffix>`` in ``out_dir``, with ``_2``, ``_3``... for a name an earlier
    input of the run already took (compared without case, as on macOS and Windows). A name
    that exists already is an ``OutputError`` unless ``overwrite``."""
    names, taken = {}, set()
    for item in items:
        p = Path(item)
        if is_video(item):
            suffix = ".mp4"
        else:
            suffix = p.suffix.lower() if p.suffix.lower() in ANNOTATED_IMAGE_SUFFIXES else ".png"
        n, name = 1, f"{p.stem}_keypoints{suffix}"
        while name.lower() in taken:
            n += 1
            name = f"{p.stem}_keypoints_{n}{suffix}"
        taken.add(name.lower())
        names[item] = Path(out_dir) / name
    existing = [str(p) for p in names.values() if os.path.lexists(p)]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputError(f"--annotate {out_dir}: {existing[0]}{more} already exists: pass "
                          f"--overwrite to replace, or choose another folder")
    return names


def is_annotated_copy(path) -> bool:
    """Whether a file's name is that of an annotated copy (``*_keypoints.*``)."""
    return bool(ANNOTATED_STEM.search(Path(path).stem))


# --------------------------------------------------------------------------------------------
# The JSON, written as the work goes
# --------------------------------------------------------------------------------------------
def dumps(obj) -> str:
    """Compact, strict JSON (no NaN or infinity: a ValueError instead)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


class Results:
    """``fkp-detect``'s JSON, entry by entry (``add``), and what the summary line needs.

    ``target``: None (nothing written), ``"-"`` (JSON Lines on standard output), a ``.jsonl``
    file (JSON Lines written straight into it, flushed entry by entry) or any other file: the
    document
    ``{"model", "images": [entry, ...], "complete"}``, one entry per line, written to a
    temporary file that ``close`` puts in place (``complete`` false after an interruption).
    An ``abort`` leaves the document's old file (if any) as it was.
    """

    def __init__(self, target, model):
        self.target, self.model = target, str(model)
        self.count = {"images": 0, "frames": 0, "faces": 0, "videos": 0}
        self.errors, self.no_face, self.failed = [], [], False
        self._tmp = self._file = None
        self._lines = target == "-" or str(target).lower().endswith(".jsonl")
        self._first = True

    def __enter__(self):
        if self.target == "-":
            self._file = sys.stdout
        elif self._lines:   # straight into the file: a killed run keeps every finished line
            Path(self.target).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.target, "w", encoding="utf-8")
        elif self.target is not None:
            self._tmp = temp_beside(self.target)
            self._file = open(self._tmp, "w", encoding="utf-8")
            self._file.write(f'{{"model":{dumps(self.model)},\n"images":[\n')
        return self

    def __exit__(self, kind, error, tb):
        if kind is None:
            self.close(complete=True)
        elif issubclass(kind, KeyboardInterrupt):
            self.close(complete=False)   # the finished part is kept
        else:
            self.abort()

    def add(self, entry):
        """One image's, frame's or video's entry: written, counted, and its errors noted."""
        is_frame, is_video = entry.get("frame") is not None, "frames_read" in entry
        key = "frames" if is_frame else "videos" if is_video else "images"
        self.count[key] += 1
        self.count["faces"] += len(entry["faces"])
        for message in [entry["error"]] + [f["error"] for f in entry["faces"] if "error" in f]:
            if message:
                self.errors.append(message)
                self.failed = True
        if not is_frame and not is_video and entry["error"] is None and not entry["faces"]:
            self.no_face.append(entry["path"])
        if self._file is None:
            return
        text = dumps(entry)
        if self._lines:
            self._file.write(text + "\n")
            self._file.flush()
        else:
            self._file.write(("" if self._first else ",\n") + text)
        self._first = False

    def close(self, complete=True):
        """Finish the JSON and put it in place (a document: ``"complete"`` says whether the
        run went to the end)."""
        if self._file is None or self._file is sys.stdout:
            return
        if not self._lines:
            self._file.write(f'\n],\n"complete":{dumps(complete)}}}\n')
        self._file.close()
        if self._tmp is not None:
            commit(self._tmp, self.target)
        self._file = None

    def abort(self):
        """After an error (not an interruption): a document's temporary file is dropped (an
        old file of that name stays as it was); JSON Lines keep the lines written."""
        if self._file is not None and self._file is not sys.stdout:
            self._file.close()
            if self._tmp is not None:
                self._tmp.unlink(missing_ok=True)
        self._file = None

    @property
    def done(self) -> int:
        return self.count["images"] + self.count["frames"]
