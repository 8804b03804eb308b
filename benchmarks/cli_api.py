"""The command and the API as a user meets them: start-up time, and the same photo through both.

    python -m benchmarks.cli_api   # prints both tables: results/cli_api.md, results/startup.md

* start-up: ``fkp-detect --help`` and ``fkp-detect PHOTO`` (the bundled photo, JSON to a file),
  and the same through the course's ``python detect.py``, as new processes, wall time, median
  of ``--runs``; the page cache is dropped before each run where this machine allows it (the
  table says whether it did);
* API against command: the bundled photo through ``KeypointPipeline().get_landmarks(path)``
  and through ``fkp-detect``'s own loop (``batch.run``, in this process), per photo, median of
  ``--repeat`` photos, with their defaults; on an idle machine and while another process keeps
  one core busy; and whether the two give the same keypoints.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import time_it, write_table
from facial_keypoints.batch import run
from facial_keypoints.keypoints.pipeline import KeypointPipeline
from facial_keypoints.paths import CHECKOUT, DEFAULT_PHOTO, RESULTS_DIR

ROOT = CHECKOUT or Path.cwd()


def drop_caches() -> bool:
    """Drop the page cache (a cold start); False where this machine does not allow it."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def startup(runs):
    """Wall seconds of new processes: ``fkp-detect`` and the course's ``python detect.py``,
    --help and one photo."""
    tool = shutil.which("fkp-detect") or str(Path(sys.executable).with_name("fkp-detect"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        photo = [str(DEFAULT_PHOTO), "--json", f"{tmp}/out.json", "--overwrite", "--quiet"]
        for name, command in (("fkp-detect --help", [tool, "--help"]),
                              ("fkp-detect photo.jpg --json out.json", [tool, *photo]),
                              ("python detect.py --help", [sys.executable, "detect.py", "--help"]),
                              ("python detect.py photo.jpg --json out.json",
                               [sys.executable, "detect.py", *photo])):
            times, cold = [], []
            for _ in range(runs):
                cold.append(drop_caches())
                t0 = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
                times.append(time.perf_counter() - t0)
            rows.append({"command": name, "runs": runs, "page cache dropped": all(cold),
                         "median s": round(statistics.median(times), 3),
                         "max s": round(max(times), 3)})
    return rows


def busy_core(stop):
    while not stop.is_set():
        pass


def per_photo(fn, repeat):
    """Milliseconds per call of ``fn``, median of ``repeat`` after one to warm up."""
    fn()
    return 1000 * statistics.median(time_it(fn, repeat))


def api_and_command(repeat):
    """ms per photo through the API and through the command's loop, idle and with one core
    busy; and the largest keypoint difference between the two."""
    pipe = KeypointPipeline()
    photo = str(DEFAULT_PHOTO)
    api = pipe.get_landmarks(photo)
    (entry, ) = run(pipe, [photo], quiet=True)
    diff = max(float(np.abs(np.asarray(f["keypoints"]) - np.round(a.keypoints, 2)).max())
               for f, a in zip(entry["faces"], api))
    rows = []
    for load in ("idle", "one core kept busy by another process"):
        stop = multiprocessing.Event()
        spinner = multiprocessing.Process(target=busy_core, args=(stop,)) \
            if load != "idle" else None
        if spinner:
            spinner.start()
        try:
            t_api = per_photo(lambda: pipe.get_landmarks(photo), repeat)
            t_cli = per_photo(lambda: list(run(pipe, [photo], quiet=True)), repeat)
        finally:
            if spinner:
                stop.set()
                spinner.join()
        rows.append({"machine": load, "API ms/photo": round(t_api, 2),
                     "command ms/photo": round(t_cli, 2),
                     "command / API": round(t_cli / t_api, 3),
                     "faces (API, command)": f"{len(api)}, {len(entry['faces'])}",
                     "largest keypoint difference px": diff})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=7, help="new processes per start-up figure")
    p.add_argument("--repeat", type=int, default=200, help="photos per API/command figure")
    p.add_argument("--out", default=str(RESULTS_DIR))
    args = p.parse_args(argv)
    rows = api_and_command(args.repeat)
    path = write_table(rows, args.out, "cli_api",
                       f"The bundled photo through the API and through fkp-detect's loop, "
                       f"defaults ({os.cpu_count()} cores; median of {args.repeat})")
    print(f"-> {path}")
    path = write_table(startup(args.runs), args.out, "startup",
                       f"fkp-detect as a new process, wall time ({os.cpu_count()} cores)")
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
