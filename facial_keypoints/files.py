"""Small helpers shared by every module: atomic file writes, hashing, one-line error text.

Every file the project writes (checkpoints, exports, logs, tables, model cards, JSON results,
downloaded data) goes through ``atomic_path``: written to a temporary file beside the target
and renamed over it when complete, so an interruption leaves the last good file intact.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import stat
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path


def temp_beside(path) -> Path:
    """A new, empty temporary file in the folder of ``path`` (of its destination, for a
    symbolic link), named ``.<stem>.<random>.tmp<suffix>``: hidden, and with the suffix that
    tells OpenCV or Pillow the format to write. ``commit`` puts it in place."""
    path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    return Path(tmp)


def commit(tmp, path):
    """Rename the finished temporary file ``tmp`` to ``path`` in one step. An existing ``path``
    keeps its permissions (a new one is an ordinary 0644 file), and a symbolic link stays a
    link: its destination is what gets replaced."""
    target = Path(os.path.realpath(path))
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = 0o644  # mkstemp makes it private; what we write is an ordinary file
    os.chmod(tmp, mode)
    os.replace(tmp, target)


@contextmanager
def atomic_path(path):
    """A temporary file beside ``path`` to write (``temp_beside``); renamed to ``path``
    (``commit``) when the block ends, removed if it raises: never a half-written ``path``."""
    tmp = temp_beside(path)
    try:
        yield tmp
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(dest):
    """A staging folder beside ``dest`` to fill; when the block ends it takes the place of
    ``dest`` (the old one moved aside, then removed); if the block raises, ``dest`` is left as
    it was and the staging folder is removed. An interruption between the two renames puts
    the old folder back."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.", dir=dest.parent) as tmp:
        staging, old = Path(tmp) / dest.name, Path(tmp) / "old"
        staging.mkdir()
        yield staging
        if dest.exists():
            os.replace(dest, old)
        try:
            os.replace(staging, dest)
        except BaseException:
            if old.exists():
                os.replace(old, dest)
            raise


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(path, obj):
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=1))


@contextmanager
def quiet_native_stderr():
    """Silence what native code writes to the process's standard error (file descriptor 2)
    inside the block, e.g. a library's start-up notice; Python's own errors still raise."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def first_line(error, limit=200) -> str:
    """The first line of an exception's message, at most ``limit`` characters (an empty
    message, e.g. a bare ``EOFError()``, gives '')."""
    return (str(error).splitlines() or [""])[0][:limit]


def one_line(error) -> str:
    """The message of an error; for one re-raised from a data loader worker, which carries the
    worker's traceback in its text, only the original message."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if last.startswith(type(error).__module__) else last
    return text


def command_line(argv=None, prog=None) -> str:
    """How this process was started, as one would type it again: ``fkp-train --epochs 3``, or
    for a script ``python train.py --epochs 3`` (``python -m pkg.mod`` for a module run with
    ``-m``). ``argv``: the arguments (default ``sys.argv[1:]``); ``prog``: the program as typed
    (default: from ``sys.argv[0]``)."""
    if prog is None:
        script = Path(sys.argv[0])
        if script.suffix == ".py" and (script.parent / "__init__.py").is_file():
            prog = f"python -m {script.parent.name}.{script.stem}"
        else:
            prog = f"python {script.name}" if script.suffix == ".py" else script.name
    return " ".join([prog, shlex.join(sys.argv[1:] if argv is None else argv)]).strip()

