"""``fkp-batch``: a whole collection on Ray Data into a Parquet dataset.

One local Ray (2 CPUs) for the module. On about 50 images (the course's test frames, the
bundled photo turned four ways, a corrupt file, a picture without a face): the rows equal
``fkp-detect --json``'s values within 0.01 px, the corrupt image has an error row, the
face-free one a row without a face; a run killed (SIGKILL) and one stopped (SIGTERM) midway,
then run again, give every row exactly once. Without Ray, ``fkp-batch`` says in one line what
to install; the inputs (folders, globs, lists, an fsspec file system) and the output's checks
run without Ray.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import cv2
import fsspec
import numpy as np
import psutil
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from facial_keypoints import paths
from facial_keypoints.cli import batch as batch_cmd
from facial_keypoints.cli import detect as detect_cmd
from facial_keypoints.images import ImageReadError, load_image
from facial_keypoints.scale import job, sources, store
from facial_keypoints.scale.rows import table as rows_table
from helpers_keypoints import ASTRONAUT, ROOT, needs_data, save_rgb
from test_layout import BLOCK_HEAVY

N_COURSE = 44
FKP_BATCH = "import sys; from facial_keypoints.cli import fkp_batch; sys.exit(fkp_batch())"


def fkp_batch(*args):
    """``fkp-batch ARGS`` as a new process (standard error captured), with this process's
    environment as it is now: Ray's token for the module's cluster (``RAY_AUTH_MODE``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", FKP_BATCH, *map(str, args)], cwd=ROOT,
                            env=env, stderr=subprocess.PIPE, text=True)


def read_rows(out):
    return pads.dataset(str(out), format="parquet").to_table().to_pylist()


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """About 50 images: course test frames, the bundled photo turned four ways, a corrupt
    file, a picture without a face."""
    folder = tmp_path_factory.mktemp("collection")
    for name in sorted(os.listdir(paths.DATA_DIR / "test"))[:N_COURSE]:
        os.link(paths.DATA_DIR / "test" / name, folder / name)
    astronaut = load_image(ASTRONAUT)
    for k in range(4):
        save_rgb(folder / f"astronaut_{90 * k}.png", np.ascontiguousarray(np.rot90(astronaut, k)))
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG" * 20)
    ramp = np.linspace(0, 255, 240).astype(np.uint8)
    save_rgb(folder / "no_face.png", np.dstack([np.tile(ramp, (160, 1))] * 3))
    return folder


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray with 2 CPUs for the module: ``fkp-batch`` in this process uses it, in
    another joins it with ``--address``."""
    with job.ray_session(num_cpus=2):
        yield job.ray.get_runtime_context().gcs_address


@pytest.fixture(scope="module")
def detected(collection, tmp_path_factory):
    """``fkp-detect --json`` on the collection: {path: entry}."""
    out = tmp_path_factory.mktemp("detect") / "out.json"
    assert detect_cmd.main([str(collection), "--json", str(out), "--quiet"]) == 1  # corrupt.jpg
    return {e["path"]: e for e in json.loads(out.read_text())["images"]}


@pytest.mark.slow
@needs_data
def test_rows_equal_fkp_detect_json(collection, detected, ray_address, tmp_path):
    out = tmp_path / "out"
    code = batch_cmd.main([str(collection), str(out), "--workers", "2", "--images-per-file", "7",
                           "--quiet"])
    assert code == 1                                # one image could not be read
    rows = read_rows(out)
    by_path = {}
    for row in rows:
        by_path.setdefault(row["path"], []).append(row)
    assert set(by_path) == set(detected) and len(detected) == N_COURSE + 6
    for path, entry in detected.items():
        mine = sorted(by_path[path], key=lambda r: -1 if r["face"] is None else r["face"])
        assert {r["markup"] for r in mine} == {"300w"}
        if entry["error"]:
            (row,) = mine
            assert row["face"] is None and row["error"] == entry["error"]
            assert "corrupt.jpg: not a readable image" in row["error"]
            continue
        assert all((r["width"], r["height"]) == (entry["width"], entry["height"]) for r in mine)
        if not entry["faces"]:
            (row,) = mine
            assert row["face"] is None and row["keypoints"] is None and row["error"] is None
            continue
        assert [r["face"] for r in mine] == list(range(len(entry["faces"])))
        for row, face in zip(mine, entry["faces"]):
            for key in ("box", "keypoints", "score", "confidence", "roll"):
                np.testing.assert_allclose(row[key], face[key], atol=0.01 + 1e-9, err_msg=key)
            assert row["error"] is None
    assert sum(1 for e in detected.values() if not e["faces"] and not e["error"]) >= 1
    # all the rows of an image are in one file; files of at most 7 images
    files = list(out.glob("part-*.parquet"))
    for f in files:
        assert len({r["path"] for r in read_rows(f)}) <= 7
    assert len(files) == -(-len(detected) // 7)
    # run again: nothing to do, nothing written; exit status 1 still (corrupt.jpg's error row)
    assert batch_cmd.main([str(collection), str(out), "--quiet"]) == 1
    assert len(list(out.glob("part-*.parquet"))) == len(files)


def wait_for_files(process, out, n, timeout=120):
    """Wait until ``out`` holds ``n`` Parquet files; the process must still be running."""
    t0 = time.monotonic()
    while len(list(out.glob("part-*.parquet"))) < n:
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() - t0 < timeout
        time.sleep(0.05)


@pytest.mark.slow
@needs_data
def test_a_killed_and_a_stopped_run_then_a_rerun_give_every_row_once(collection, ray_address,
                                                                    tmp_path):
    """150 images (the collection three times over, in subfolders): killed (SIGKILL) after two
    files, stopped (SIGTERM, with its own local Ray) after two more, then run to the end."""
    big = tmp_path / "big"
    for i in range(3):
        (big / f"copy{i}").mkdir(parents=True)
        for f in collection.iterdir():
            os.link(f, big / f"copy{i}" / f.name)
    names = sources.list_images(big, recursive=True)
    assert len(names) == 3 * (N_COURSE + 6)
    out, slow = tmp_path / "out", ["--batch-size", "2", "--images-per-file", "4", "--quiet", "-r"]

    killed = fkp_batch(big, out, "--address", ray_address, "--workers", "1", *slow)
    wait_for_files(killed, out, 2)
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    first = len(list(out.glob("part-*.parquet")))

    stopped = fkp_batch(big, out, "--num-cpus", "1", *slow)    # a local Ray of its own
    wait_for_files(stopped, out, first + 2)
    ray_processes = psutil.Process(stopped.pid).children(recursive=True)
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(60) == 128 + signal.SIGTERM
    (line,) = stopped.stderr.read().strip().splitlines()
    assert line.startswith("fkp-batch: interrupted (SIGTERM): ") and "again to continue" in line
    gone, alive = psutil.wait_procs(ray_processes, timeout=20)
    assert not alive, f"the local Ray outlived the command: {alive}"
    partial = read_rows(out)
    assert len({r["path"] for r in partial}) < len(names)      # stopped midway

    assert batch_cmd.main([str(big), str(out), "-r", "--quiet"]) == 1   # the corrupt copies
    rows = read_rows(out)
    keys = Counter((r["path"], r["face"]) for r in rows)
    assert max(keys.values()) == 1                              # no row twice
    assert {r["path"] for r in rows} == set(names)              # every image
    copies = Counter((r["path"].rsplit("/", 1)[1], r["face"]) for r in rows)
    assert set(copies.values()) == {3}                          # the same rows for each copy


# --------------------------------------------------------------------------------------------
# Without Ray: the inputs, the output's checks, the light install
# --------------------------------------------------------------------------------------------
def test_fkp_batch_without_its_extra_says_what_to_install(tmp_path):
    code = BLOCK_HEAVY.replace("'torch', 'torchvision', 'pandas', 'matplotlib'",
                               "'ray', 'pyarrow', 'fsspec'") + """
from facial_keypoints import cli
sys.exit(cli.fkp_batch(['photos/', 'out/']))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("fkp-batch: error: ")
    assert "pip install 'facial-keypoints[scale]'" in line


def test_a_worker_gives_every_image_a_record(tmp_path, monkeypatch):
    """``FaceFinder`` (a Ray worker) without Ray: an unreadable image gets its error, and where
    the pipeline fails on one image of a batch, that image gets the error and the others their
    faces."""
    threads = cv2.getNumThreads()
    try:
        finder = job.FaceFinder(job.pipeline_options(paths.DEFAULT_MODEL, "blazeface", None,
                                                     None))
    finally:
        cv2.setNumThreads(threads)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    save_rgb(tmp_path / "blank.png", np.full((64, 80, 3), 128, np.uint8))
    names = [str(ASTRONAUT), str(tmp_path / "bad.jpg"), str(tmp_path / "blank.png")]

    def entries():
        out = finder({"path": np.array(names, dtype=object)}).to_pylist()
        assert [r["path"] for r in out] == names
        return out

    good, bad, blank = entries()
    assert len(good["faces"]) == 1 and good["error"] is None
    assert not bad["faces"] and "bad.jpg: not a readable image" in bad["error"]
    assert not blank["faces"] and blank["error"] is None and blank["width"] == 80
    real = finder.pipe.find_faces_in

    def fails_on_blank(images):
        if any(im.shape[:2] == (64, 80) for im in images):
            raise RuntimeError("boom")
        return real(images)

    monkeypatch.setattr(finder.pipe, "find_faces_in", fails_on_blank)
    again, _, failed = entries()
    assert again["faces"] == good["faces"]
    assert failed["error"] == f"{names[2]}: the pipeline failed on it (RuntimeError: boom)"


def test_inputs_folders_globs_and_lists(tmp_path):
    for name in ("b.jpg", "a.png", "notes.txt", ".hidden.jpg", "sub/c.jpg", ".cache/d.jpg"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    top = [str(tmp_path / n) for n in ("a.png", "b.jpg")]
    assert sources.list_images(tmp_path) == top
    assert sources.list_images(tmp_path, recursive=True) == top + [str(tmp_path / "sub/c.jpg")]
    assert sources.list_images(f"{tmp_path}/**/*.jpg") == \
        [str(tmp_path / "b.jpg"), str(tmp_path / "sub/c.jpg")]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# photos\n\n{tmp_path}/b.jpg\nfile://{tmp_path}/b.jpg\nmissing.jpg\n"
                       "s3://bucket/key.jpg\n")
    assert sources.list_images(listing) == [str(tmp_path / "b.jpg"), os.path.abspath(
        "missing.jpg"), "s3://bucket/key.jpg"]
    for bad, says in ((tmp_path / "nothing", "no such file"), (tmp_path / "sub" / "*.png",
                                                               "no image files"),
                      ("nosuchfs://x/y", "cannot reach its file system")):
        with pytest.raises(sources.SourceError, match=says):
            sources.list_images(bad)


def test_an_fsspec_file_system_in_and_out():
    """The memory:// file system stands for a remote one (s3://, gs://): listed, read, and
    the dataset's files written under a temporary name, then moved."""
    fs = fsspec.filesystem("memory")
    fs.pipe("/fkp-in/astro.jpg", ASTRONAUT.read_bytes())
    fs.pipe("/fkp-in/broken.jpg", b"nope")
    names = sources.list_images("memory://fkp-in")
    assert names == ["memory:///fkp-in/astro.jpg", "memory:///fkp-in/broken.jpg"]
    assert sources.read_image(names[0]).shape == load_image(ASTRONAUT).shape
    with pytest.raises(ImageReadError, match="broken.jpg: not a readable image"):
        sources.read_image(names[1])
    with pytest.raises(ImageReadError, match="no such file"):
        sources.read_image("memory:///fkp-in/gone.jpg")
    data = store.Dataset("memory://fkp-out")
    assert data.open({"detector": "haar"}) == set()
    data.write([{"path": names[1], "error": "broken"}])
    assert data.done() == {names[1]} and not data.temporaries()
    with pytest.raises(store.OutputError, match="was written with detector 'haar'"):
        store.Dataset("memory://fkp-out").open({"detector": "blazeface"})
    fs.rm("/fkp-in", recursive=True)
    fs.rm("/fkp-out", recursive=True)


def test_outputs_that_are_refused(tmp_path, capsys, monkeypatch):
    """One line and exit status 2 before any work; nothing of theirs touched."""
    monkeypatch.chdir(tmp_path)
    photo = str(ASTRONAUT)
    (tmp_path / "file").write_text("x")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "data.csv").write_text("x")
    (tmp_path / "other").mkdir()   # rows made with other settings
    (tmp_path / "other" / store.SETTINGS_FILE).write_text('{"detector": "haar"}')
    pq.write_table(rows_table([{"path": "/x.jpg", "error": "e"}]),
                   tmp_path / "other" / "part-0.parquet")
    for argv, says in (([photo, "file"], "is a file"),
                       ([photo, "theirs"], "not an fkp-batch output"),
                       ([photo, "other"], "was written with "),
                       (["none", "o"], "no such file"),
                       ([photo, "o", "--address", "auto", "--num-cpus", "2"], "--num-cpus")):
        assert batch_cmd.main(argv) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("fkp-batch: error: ") and says in line, line
    assert (tmp_path / "theirs" / "data.csv").read_text() == "x"
    assert sorted(os.listdir(tmp_path)) == ["file", "other", "theirs"]
