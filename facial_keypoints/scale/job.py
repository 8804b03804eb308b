"""The Ray Data job of ``fkp-batch``: a collection's images through a pool of workers, each
holding one ``KeypointPipeline``, their rows streamed into the output dataset.

    names -> ray.data.from_items (paths only, small blocks)
          -> map_batches(FaceFinder, ActorPoolStrategy(size=workers)): each worker reads its
             images (``sources.read_image``) and finds their faces (``find_faces_in``) a batch
             at a time; out comes one record per image (``rows.RECORD``: its ``fkp-detect``
             JSON entry, the faces a list), an Arrow table
          -> iter_batches on the driver -> ``rows.rows_of`` -> ``store.Dataset.write``

Streaming: Ray Data runs the stages side by side with bounded queues between them, so images
are read only as fast as the workers take them and a worker's results leave it as they are
done; what the driver holds is the list of names (about 100-200 bytes each) and the rows of
the file being filled, whatever the collection's size.

One record per image, not per face: Ray may split or merge blocks between stages, but it never
splits a row, so an image's faces reach the driver together; the driver alone turns them into
rows and writes files of whole images (and drops a record of an image it has already written,
should Ray ever hand one over twice). Every file is written whole or not at all (``store``).

A worker that dies (a node lost, memory exhausted) is restarted by Ray Data and its batch
done again (Ray Data's default); a run that fails all the same keeps what it wrote, and the
same command continues it.

Workers: ``workers`` actors with ``cpus`` CPUs each (the keypoint model, OpenCV and the
detector run on that many threads) and, with ``gpus`` > 0, that share of a GPU each, the model
then on PyTorch and CUDA (the ``[train]`` extra on every node; the detector stays on the CPU).
"""
from __future__ import annotations

import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import cv2
import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.data
from tqdm import tqdm

from facial_keypoints.batch import image_entry
from facial_keypoints.files import quiet_native_stderr
from facial_keypoints.images import ImageReadError
from facial_keypoints.keypoints.pipeline import KeypointPipeline
from facial_keypoints.scale.rows import image_record, records_table, rows_of
from facial_keypoints.scale.sources import read_image

#: A Parquet file is written at least this often (seconds) while images are done: what a
#: killed run can lose.
SECONDS_PER_FILE = 60.0
#: The environment variable of the log level of Ray's C++ core (``quiet_core_logs``).
LOG_LEVEL = "RAY_BACKEND_LOG_LEVEL"
#: Errors listed one by one in the summary; the rest are in the ``error`` column.
ERRORS_SHOWN = 10


class JobError(RuntimeError):
    """The job could not run: Ray could not start or be reached, or its workers failed."""


@dataclass
class Workers:
    """The actor pool: ``count`` workers of ``cpus`` CPUs and ``gpus`` GPUs each, each given
    ``batch_size`` images at a time."""
    count: int = 1
    cpus: float = 1.0
    gpus: float = 0.0
    batch_size: int = 16


def worker_pool(count, cpus=1, gpus=0.0, batch_size=16) -> Workers:
    """The pool: ``count`` workers, or (None) as many as the Ray joined has CPUs (and GPUs)
    for; ``JobError`` where GPUs are asked for and it has none."""
    if count is None:
        have = ray.cluster_resources()
        count = int(have.get("CPU", 1) // cpus)
        if gpus:
            if not have.get("GPU"):
                raise JobError("--gpus-per-worker: this Ray has no GPU")
            count = min(count, int(have["GPU"] // gpus))
    return Workers(max(1, count), cpus, gpus, batch_size)


def pipeline_options(model, detector, markup, min_confidence, gpus=0.0) -> dict:
    """The ``KeypointPipeline`` arguments each worker builds its pipeline with
    (``FaceFinder``): with ``gpus``, the model on PyTorch and CUDA."""
    return {"model": os.path.abspath(model), "detector": detector, "markup": markup,
            "min_confidence": min_confidence, "backend": "torch" if gpus else "onnx",
            "device": "cuda" if gpus else "cpu"}


class FaceFinder:
    """A Ray worker: one ``KeypointPipeline``; a batch of image names in, one record per image
    out (``rows.RECORD``: its ``fkp-detect`` JSON entry, faces as a list), as an Arrow table."""

    def __init__(self, options, threads=1):
        cv2.setNumThreads(threads)             # OpenCV, and the detector (LiteRT) after it
        self.pipe = KeypointPipeline(**options, threads=threads)   # this worker's CPUs

    def __call__(self, batch):
        names = [str(n) for n in batch["path"]]
        images = []
        for name in names:
            try:
                images.append(read_image(name))
            except ImageReadError as e:
                images.append(e)
        read = [i for i, im in enumerate(images) if not isinstance(im, Exception)]
        found = dict(zip(read, self.faces([images[i] for i in read])))
        records = []
        for i, (name, image) in enumerate(zip(names, images)):
            faces = found.get(i, [])
            if isinstance(faces, Exception):
                image, faces = RuntimeError(f"{name}: {faces}"), []
            records.append(image_record(image_entry(name, image, faces), self.pipe.markup))
        return records_table(records)

    def faces(self, images):
        """Each image's faces (``find_faces_in``); where the batch fails, image by image, an
        image that fails alone getting the error instead of its faces."""
        try:
            return self.pipe.find_faces_in(images)
        except Exception:
            out = []
            for image in images:
                try:
                    out += self.pipe.find_faces_in([image])
                except Exception as e:
                    out.append(RuntimeError(f"the pipeline failed on it ({type(e).__name__}: "
                                            f"{e})"))
            return out


@contextmanager
def quiet_core_logs():
    """Ray's C++ core logs only fatal errors in the processes started inside the block (this
    driver's, and a local Ray's), unless ``RAY_BACKEND_LOG_LEVEL`` says otherwise: with Ray
    Data's actor pools it writes a line to the terminal at every run (Ray issue 53727: the
    pool's actors are restartable and take their arguments from the object store). Errors
    that matter still reach the driver as Python exceptions."""
    if LOG_LEVEL in os.environ:
        yield
        return
    os.environ[LOG_LEVEL] = "fatal"
    try:
        yield
    finally:
        os.environ.pop(LOG_LEVEL, None)


@contextmanager
def ray_session(address=None, num_cpus=None, num_gpus=None):
    """Ray for the job, quiet: a local Ray on this machine with ``num_cpus`` CPUs and
    ``num_gpus`` GPUs (None: all it has), started here and shut down when the block ends, also
    on Ctrl-C or an error; or, with ``address`` (``"auto"``, ``"HOST:6379"``), the existing
    cluster joined (and left at the end). Where Ray is already initialised in this process,
    that session is used and left running."""
    if ray.is_initialized():
        yield
        return
    quiet = {"include_dashboard": False, "logging_level": logging.ERROR,
             "log_to_driver": False, "configure_logging": True}
    try:
        with quiet_core_logs(), quiet_native_stderr():   # its start-up lines too
            if address:
                ray.init(address=address, **quiet)
            else:       # "local": a new Ray even where RAY_ADDRESS names a cluster
                ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as e:
        ray.shutdown()
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise JobError(f"could not start or join {where} ({str(e).splitlines()[0]})") from None
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False    # the command shows its own
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        yield
    finally:
        ray.shutdown()


def records(names, options, workers: Workers):
    """Tables of image records (``rows.RECORD``) for the images of ``names``, as the workers
    finish them (in no set order), through Ray Data's streaming executor."""
    per_block = max(1, min(workers.batch_size * 8, math.ceil(len(names) / (4 * workers.count))))
    items = ray.data.from_items([{"path": n} for n in names],
                                override_num_blocks=math.ceil(len(names) / per_block))
    threads = max(1, int(workers.cpus))
    done = items.map_batches(
        FaceFinder, fn_constructor_kwargs={"options": options, "threads": threads},
        batch_size=workers.batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers.count),
        num_cpus=workers.cpus, num_gpus=workers.gpus or None)
    yield from done.iter_batches(batch_size=None, batch_format="pyarrow")


@dataclass
class Tally:
    """What a run did: images written (with faces, without, unreadable), faces, files."""
    images: int = 0
    faces: int = 0
    no_face: int = 0
    failed: int = 0
    files: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    first: float | None = None   # time.perf_counter() when the first images came back
    first_images: int = 0        # ... and how many came then

    def add(self, records):
        """Count a table of image records (``rows.RECORD``)."""
        if self.first is None:
            self.first, self.first_images = time.perf_counter(), records.num_rows
        n_faces = pc.list_value_length(records.column("faces")).fill_null(0)
        self.images += records.num_rows
        self.faces += pc.sum(n_faces).as_py() or 0
        self.no_face += pc.sum(pc.and_(pc.is_null(records.column("error")),
                                       pc.equal(n_faces, 0))).as_py() or 0
        faces = records.column("faces").to_pylist() if self.failed_faces(records) else \
            [[]] * records.num_rows   # (the faces read one by one only where one failed)
        for error, image_faces in zip(records.column("error").to_pylist(), faces):
            problems = [p for p in [error, *(f["error"] for f in image_faces)] if p]
            if problems:
                self.failed += 1
                self.errors += problems[:ERRORS_SHOWN - len(self.errors)]

    @staticmethod
    def failed_faces(records) -> bool:
        """Whether any face of ``records`` has an error (a model giving NaN: rare)."""
        flat = pc.list_flatten(records.column("faces"))
        return len(flat) > 0 and pc.any(pc.is_valid(pc.struct_field(flat, "error"))).as_py()


class Collector:
    """What the command's process does with the workers' records: drops an image it has
    already (whatever happens upstream, never twice), counts (``tally``), and writes the rows
    to ``dataset`` in files of ``images_per_file`` images, or of what came in
    ``SECONDS_PER_FILE``, cutting only between images. What waits for its file is Arrow tables
    of records (about 1.2 KB a face), not Python objects, and every step works on whole tables
    (``rows.rows_of``): this one process keeps up with many workers
    (``benchmarks.benchmark_batch`` measures how many)."""

    def __init__(self, dataset, done=(), images_per_file=10_000, tally=None, bar=None):
        self.dataset, self.images_per_file, self.bar = dataset, images_per_file, bar
        self.tally = Tally() if tally is None else tally
        self.written = set(done)
        self.pending, self.waiting, self.last = [], 0, time.monotonic()

    def add(self, block):
        """A table of image records (``rows.RECORD``) from the workers."""
        fresh = []
        for path in block.column("path").to_pylist():
            fresh.append(path not in self.written)
            self.written.add(path)
        if not all(fresh):
            block = block.filter(pa.array(fresh))
        while block.num_rows:   # records are whole images: cut between them
            part = block.slice(0, self.images_per_file - self.waiting)
            block = block.slice(part.num_rows)
            self.pending.append(part)
            self.waiting += part.num_rows
            self.tally.add(part)
            if self.bar is not None:
                self.bar.update(part.num_rows)
            if self.waiting >= self.images_per_file or \
                    time.monotonic() - self.last >= SECONDS_PER_FILE:
                self.flush()

    def flush(self):
        """Write what waits, as one file."""
        # taken off first: an interruption during the write cannot write them a second time
        tables, self.pending, self.waiting = self.pending, [], 0
        self.last = time.monotonic()
        if tables:
            self.tally.files.append(self.dataset.write(rows_of(pa.concat_tables(tables))))


def run(names, dataset, options, workers: Workers, done=(), images_per_file=10_000,
        progress=True, tally=None) -> Tally:
    """Every image of ``names`` not in ``done`` through the workers, its rows written to
    ``dataset`` (``store.Dataset``, opened) by a ``Collector``. What was done is written also
    when the run is interrupted or fails (whole images only). ``tally``: a ``Tally`` to count
    into (the caller's, so that it tells what was written after an interruption)."""
    done = set(done)
    todo = [n for n in names if n not in done]
    tally = Tally() if tally is None else tally
    if not todo:
        return tally
    bar = tqdm(total=len(todo), desc="images", unit="image", disable=not progress or None)
    collector = Collector(dataset, done, images_per_file, tally, bar)
    try:
        for block in records(todo, options, workers):
            collector.add(block)
    except ray.exceptions.RayError as e:
        raise JobError(f"the Ray job failed ({str(e).strip().splitlines()[-1]})") from None
    finally:
        bar.close()
        collector.flush()
    return tally
