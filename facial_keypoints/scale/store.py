"""``fkp-batch``'s output: a Parquet dataset in a folder (local, or any file system fsspec
reaches), which a rerun continues without redoing or repeating an image.

    OUTPUT/_fkp-batch.json           the settings its rows were made with (written first)
    OUTPUT/part-<run>-<n>.parquet    rows (``rows.SCHEMA``) of whole images

Read it with any Parquet reader (``pandas.read_parquet(OUTPUT)``, ``pyarrow.dataset``, Spark,
DuckDB, ``ray.data.read_parquet``): they skip names that start with ``_`` or ``.``.

Resuming without duplicates:

* every image processed leaves rows (one per face; one for an image with no face or that could
  not be read: ``rows``), and all the rows of an image go into one file;
* each file is written under a hidden temporary name (``.part-...``) and renamed into place
  when complete (on an object store, one upload that appears whole), so a file in the dataset
  is never half written, whenever the run is killed;
* a run first reads the ``path`` column of every ``part-*.parquet`` file there (``done``) and
  processes only the images not among them; new files get new names (``<run>``: the start
  time and a random tag), so nothing written before is replaced.

A rerun must use the same settings (model, detector, mark-up, ``min_confidence``: the rows would
not be comparable otherwise): ``_fkp-batch.json`` holds them and another setting is refused. A
folder that holds other files but no ``_fkp-batch.json`` is not taken for an output. Run one
``fkp-batch`` per OUTPUT at a time. A run killed while writing leaves its temporary file
(hidden, not part of the dataset): ``temporaries`` lists them, and they may be deleted.
"""
from __future__ import annotations

import json
import secrets
import tempfile
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from facial_keypoints.files import atomic_path, atomic_write_text, file_sha256
from facial_keypoints.output import OutputError
from facial_keypoints.scale.rows import table
from facial_keypoints.scale.sources import SourceError, filesystem

SETTINGS_FILE = "_fkp-batch.json"
#: The settings that change the rows: a rerun must use the same.
SAME_SETTINGS = ("model_sha256", "detector", "markup", "min_confidence")


def model_settings(pipe, detector) -> dict:
    """What ``SETTINGS_FILE`` records of a pipeline (``KeypointPipeline``) and the name of
    its detector."""
    return {"model": str(pipe.model_path), "model_sha256": file_sha256(pipe.model_path),
            "detector": detector, "markup": pipe.markup,
            "min_confidence": pipe.min_confidence}


class Dataset:
    """The output folder ``uri``: ``open`` it, then ``write`` rows of whole images."""

    def __init__(self, uri):
        try:
            self.fs, self.root = filesystem(uri)
        except SourceError as e:
            raise OutputError(str(e)) from None
        self.uri, self.root = str(uri), self.root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)
        self.run = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
        self.files = 0
        self.settings = None
        self.failed = 0   # images of the dataset that could not be read (``done``)

    def _at(self, name) -> str:
        return f"{self.root}/{name}"

    def open(self, settings) -> set[str]:
        """Check the output before any work (``OutputError`` with what to do), record
        ``settings`` in a new one, and return the paths of the images already in it."""
        fs, settings_file = self.fs, self._at(SETTINGS_FILE)
        try:
            if fs.exists(self.root) and not fs.isdir(self.root):
                raise OutputError(f"{self.uri} is a file: OUTPUT is a folder for the Parquet "
                                  f"files")
            if fs.exists(settings_file) and self.parts():
                self._check_same(json.loads(fs.cat_file(settings_file)), settings)
            elif fs.exists(settings_file):   # no rows yet (e.g. Ray could not start): any settings
                self._put_settings(settings_file, settings)
            elif fs.isdir(self.root) and [n for n in fs.ls(self.root, detail=False)
                                          if not n.rstrip("/").rsplit("/", 1)[-1]
                                          .startswith(".")]:
                raise OutputError(f"{self.uri} holds other files and is not an fkp-batch "
                                  f"output (no {SETTINGS_FILE}): choose a new or empty folder")
            else:
                fs.makedirs(self.root, exist_ok=True)
                self._put_settings(settings_file, settings)
            self._check_writable()
        except OSError as e:
            raise OutputError(f"{self.uri}: cannot be used as the output ({e})") from None
        except ValueError as e:   # a settings file that is not JSON
            if isinstance(e, OutputError):
                raise
            raise OutputError(f"{settings_file}: not fkp-batch's settings ({e})") from None
        self.settings = settings
        return self.done()

    def _check_same(self, recorded, settings):
        differ = [k for k in SAME_SETTINGS if recorded.get(k) != settings.get(k)]
        if differ:
            was = ", ".join(f"{k} {recorded.get(k)!r}" for k in differ)
            now = ", ".join(f"{k} {settings.get(k)!r}" for k in differ)
            raise OutputError(f"{self.uri} was written with {was}, this run has {now}: use the "
                              f"same settings to continue it, or another OUTPUT")

    def _put_settings(self, path, settings):
        text = json.dumps({"written_by": "fkp-batch", **settings}, indent=1)
        if self.local:
            atomic_write_text(path, text)
        else:
            self.fs.pipe_file(path, text.encode())

    def _check_writable(self):
        """A new file can be made in the folder: tried, as permissions alone do not tell."""
        if self.local:
            with tempfile.TemporaryFile(dir=self.root):
                return
        probe = self._at(f".fkp-batch-probe-{self.run}")
        self.fs.pipe_file(probe, b"")
        self.fs.rm_file(probe)

    def parts(self) -> list[str]:
        return sorted(self.fs.glob(self._at("part-*.parquet")))

    def temporaries(self) -> list[str]:
        """Temporary files that killed runs left (hidden: not part of the dataset)."""
        return sorted(self.fs.glob(self._at(".part-*")))

    def done(self) -> set[str]:
        """The paths of the images in the dataset: the ``path`` column of every file. Those
        whose row has an ``error`` (unreadable) are counted too: ``failed``."""
        paths, failed = set(), set()
        for part in self.parts():
            try:
                with self.fs.open(part, "rb") as f:
                    rows = pq.read_table(f, columns=["path", "error"])
                paths.update(rows.column("path").to_pylist())
                failed.update(rows.filter(pc.is_valid(rows.column("error")))
                              .column("path").to_pylist())
            except Exception as e:   # pyarrow's errors for a damaged file are of many kinds
                raise OutputError(f"{part}: not a readable Parquet file ({type(e).__name__}: "
                                  f"{e}); move it out of {self.uri} (its images are then done "
                                  f"again)") from None
        self.failed = len(failed)
        return paths

    def write(self, rows) -> str:
        """Rows of whole images (an Arrow table of ``rows.SCHEMA``, or dicts) as the next
        Parquet file, in one step: written under a hidden temporary name, then renamed.
        Returns the file's name."""
        name = f"part-{self.run}-{self.files:05d}.parquet"
        self.files += 1
        data = (rows if isinstance(rows, pa.Table) else table(rows)).replace_schema_metadata(
            {"fkp-batch": json.dumps(self.settings or {})})
        target = self._at(name)
        if self.fs.exists(target):      # a new run's name: never there, but never replaced
            raise OutputError(f"{target} exists already: not replaced")
        if self.local:
            with atomic_path(target) as tmp:
                pq.write_table(data, tmp)
        else:
            tmp = self._at(f".{name}.tmp")
            with self.fs.open(tmp, "wb") as f:
                pq.write_table(data, f)
            self.fs.mv(tmp, target)
        return target
