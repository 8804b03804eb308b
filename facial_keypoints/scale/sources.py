"""Which images ``fkp-batch``'s INPUT names, and reading one of them, on any file system that
fsspec reaches (a local folder; ``s3://``, ``gs://``, ``az://``, ``hdfs://``, ... where the
user has installed and set up its fsspec package, e.g. ``s3fs``).

INPUT is one of:

* a folder: its image files (by extension, ``batch.IMAGE_EXTENSIONS``), sorted; with
  ``recursive``, those of its subfolders too;
* a glob (``photos/*.jpg``, ``s3://bucket/2024/**/*.png``): the image files it matches, sorted;
* a text file of paths or URIs (``.txt``, ``.lst``, ``.list``): one per line, in that order;
  blank lines and lines starting with ``#`` are skipped, and each line is taken as it is (a
  line that names no readable image gets an error row, as an unreadable file does); a relative
  local path is relative to the current folder, as on a command line;
* one image file.

Hidden files and folders (``.name``) are never inputs of a folder or a glob. Each image is
named by its absolute local path or its full URI (``s3://bucket/key``): the ``path`` of its
rows, the same from whatever folder the command runs, and on every node of a cluster (local
paths must then name the same files on every node: a shared file system). A path listed twice
is processed once.
"""
from __future__ import annotations

import os
from pathlib import PurePosixPath

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from facial_keypoints.batch import IMAGE_EXTENSIONS
from facial_keypoints.images import ImageReadError, decode_image, load_image

#: A file of these suffixes is a list of paths or URIs, one per line.
LIST_SUFFIXES = (".txt", ".lst", ".list")
GLOB_CHARACTERS = set("*?[")


class SourceError(ValueError):
    """An INPUT that names nothing to read, or a file system that cannot be reached."""


def is_local(uri) -> bool:
    """Whether a path or URI is on this machine's file system (no protocol, or ``file://``)."""
    return fsspec.utils.get_protocol(str(uri)) in ("file", "local")


def filesystem(uri):
    """``(fsspec file system, path in it)`` for a path or URI; ``SourceError`` where its file
    system is unknown or its package is not installed (e.g. ``s3fs`` for ``s3://``)."""
    try:
        return url_to_fs(str(uri))
    except (ImportError, ValueError) as e:
        raise SourceError(f"{uri}: cannot reach its file system ({e})") from None


def full_name(fs, path) -> str:
    """How a file is named in the rows: an absolute local path, or a full URI."""
    return local_path(path) if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


def local_path(name) -> str:
    """A local path or ``file://`` URI as an absolute path."""
    return os.path.abspath(LocalFileSystem._strip_protocol(str(name)))


def _hidden(path, below="") -> bool:
    rest = str(path)[len(str(below)):] if below and str(path).startswith(str(below)) else path
    return any(part.startswith(".") for part in PurePosixPath(rest).parts)


def _is_image_name(path) -> bool:
    return PurePosixPath(str(path)).suffix.lower() in IMAGE_EXTENSIONS


def list_images(source, recursive=False) -> list[str]:
    """The images INPUT ``source`` names (see the module's text), each as ``full_name`` gives
    it, without repeats; ``SourceError`` when it names none or cannot be read."""
    fs, path = filesystem(source)
    try:
        if GLOB_CHARACTERS & set(str(path)):
            base = str(path)[:min(str(path).find(c) for c in GLOB_CHARACTERS
                                  if c in str(path))].rsplit("/", 1)[0]
            found = sorted(p for p, info in fs.glob(path, detail=True).items()
                           if info.get("type") == "file" and _is_image_name(p)
                           and not _hidden(p, below=base))
            where = "match the glob"
        elif fs.isdir(path):
            found = sorted(p for p in fs.find(path, maxdepth=None if recursive else 1)
                           if _is_image_name(p) and not _hidden(p, below=path))
            where = "in the folder" + ("" if recursive else " (add --recursive for its "
                                                         "subfolders)")
        elif fs.isfile(path) and PurePosixPath(str(path)).suffix.lower() in LIST_SUFFIXES:
            return _unique(_listed(fs, path, source))
        elif fs.isfile(path):
            return [full_name(fs, path)]
        else:
            raise SourceError(f"{source}: no such file, folder or glob match")
    except OSError as e:
        raise SourceError(f"{source}: cannot be listed ({e})") from None
    if not found:
        raise SourceError(f"{source}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) "
                          f"{where}")
    return _unique(full_name(fs, p) for p in found)


def _listed(fs, path, source):
    """The paths or URIs of a text file, one per line."""
    try:
        text = fs.cat_file(path).decode("utf-8")
    except UnicodeDecodeError as e:
        raise SourceError(f"{source}: not a UTF-8 text file of paths ({e})") from None
    lines = [line.strip() for line in text.splitlines()]
    names = [line for line in lines if line and not line.startswith("#")]
    if not names:
        raise SourceError(f"{source}: a list with no path in it")
    return [local_path(n) if is_local(n) else n for n in names]


def _unique(names) -> list[str]:
    return list(dict.fromkeys(names))


def read_image(name):
    """An image named by ``list_images`` as an RGB array: a local file through
    ``images.load_image`` (as ``fkp-detect`` reads it), any other through its file system and
    ``images.decode_image``. ``ImageReadError`` for anything that cannot be read."""
    if is_local(name):
        return load_image(local_path(name))
    try:
        fs, path = filesystem(name)
        data = fs.cat_file(path)
    except FileNotFoundError:
        raise ImageReadError(f"{name}: no such file") from None
    except Exception as e:   # a file system's own errors: network, permissions, ...
        raise ImageReadError(f"{name}: could not be read ({type(e).__name__}: {e})") from None
    return decode_image(data, name)
