"""``fkp-batch`` (Ray Data) against ``fkp-detect folder/`` on the same photos, in one run.

    python -m benchmarks.benchmark_batch    # prints the table: results/batch.md, results/batch.json

Each command runs as a new process, as a user starts it, on the first N course training frames
(``data/training``; hard links in a temporary folder) for N in ``--sizes`` (default 10, 1,000
and 3,000): ``fkp-detect FOLDER --json out.json`` and ``fkp-batch FOLDER OUT/`` with a local
Ray of this machine's cores, both with their defaults. Measured: wall time (start-up and
shut-down included), images/s, and the peak memory of the whole process tree (the command and
every process it starts: Ray's GCS, raylet, workers, ...): the sum of the processes' RSS,
sampled every 0.25 s (shared pages counted once per process: an upper bound), and the sum of
their PSS (shared pages split between the processes that share them), sampled at each new
peak of the RSS sum and every 2 s.

Two rows per command are worked out from the two largest sizes: the images/s of the images
beyond the smaller run (start-up, model loading and shut-down cancel out), and the fixed cost
that remains (worked out, not timed: the whole run = fixed cost + images / that rate).
Both commands must give the same faces: the counts are compared (the ``faces`` column). Last,
the command's own share of ``fkp-batch``'s work (``job.Collector``: the workers' records made
into rows and written as Parquet), timed alone in this process on the largest run's records
ten times over: the most images/s one ``fkp-batch`` takes in, however many workers it has.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow.dataset as pads

from benchmarks.common import write_table
from facial_keypoints.paths import DATA_DIR, RESULTS_DIR
from facial_keypoints.scale.job import Collector
from facial_keypoints.scale.rows import FACE_FIELDS, records_table
from facial_keypoints.scale.store import Dataset

BIN = Path(sys.executable).parent


def tree(pid):
    """The process and every process below it that is still there."""
    try:
        top = psutil.Process(pid)
        return [top] + top.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def memory(processes, kind):
    total = 0
    for p in processes:
        try:
            total += p.memory_full_info().pss if kind == "pss" else p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return total


def measure(command):
    """Run ``command``: (wall s, peak RSS sum MB, peak PSS sum MB, most processes at once)."""
    t0 = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    rss = pss = most = 0
    last_pss = time.perf_counter()
    while process.poll() is None:
        processes = tree(process.pid)
        most = max(most, len(processes))
        now = memory(processes, "rss")
        if now > 1.02 * rss or time.perf_counter() - last_pss >= 2.0:   # a new peak, or 2 s
            pss, last_pss = max(pss, memory(processes, "pss")), time.perf_counter()
        rss = max(rss, now)
        time.sleep(0.25)
    seconds = time.perf_counter() - t0
    err = process.stderr.read()
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} exited with {process.returncode}: {err[-2000:]}")
    return seconds, rss / 1e6, pss / 1e6, most


def folder_of(n, root):
    """A folder of the first ``n`` course training frames (hard links)."""
    frames = sorted((DATA_DIR / "training").glob("*.jpg"))
    if len(frames) < n:
        raise SystemExit(f"{DATA_DIR / 'training'} has {len(frames)} frames, not {n}: run "
                         f"`make data`")
    folder = Path(root) / f"photos_{n}"
    folder.mkdir()
    for f in frames[:n]:
        os.link(f, folder / f.name)
    return folder


def faces_in_json(path):
    return sum(len(e["faces"]) for e in json.loads(Path(path).read_text())["images"])


def faces_in_parquet(path):
    return pads.dataset(str(path), format="parquet").to_table(
        filter=pads.field("face").is_valid()).num_rows


def parquet_bytes(path):
    return sum(f.stat().st_size for f in Path(path).glob("part-*.parquet"))


def collector_rate(parquet, tmp, copies=10):
    """Images/s of the command's own share of the work (``job.Collector``: records in, rows
    out, Parquet files written), fed the records of a finished run ``copies`` times over (as
    new paths), in blocks of 16 images as the workers hand them over: the most images/s one
    ``fkp-batch`` can take in, however many workers feed it."""
    rows = pads.dataset(str(parquet), format="parquet").to_table().to_pylist()
    by_path = {}
    for row in rows:
        by_path.setdefault(row["path"], []).append(row)
    records = []
    for copy in range(copies):
        for path, image in by_path.items():
            first = image[0]
            faces = [{k: r[k] for k in FACE_FIELDS} for r in image if r["face"] is not None]
            records.append({"path": f"{path}#{copy}", "width": first["width"],
                            "height": first["height"], "markup": first["markup"],
                            "error": None if faces else first["error"], "faces": faces})
    blocks = [records_table(records[i:i + 16]) for i in range(0, len(records), 16)]
    dataset = Dataset(Path(tmp) / "collector")
    dataset.open({"benchmark": True})
    t0 = time.perf_counter()
    collector = Collector(dataset)
    for block in blocks:
        collector.add(block)
    collector.flush()
    return len(records) / (time.perf_counter() - t0), len(records)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 3000])
    p.add_argument("--out", default=str(RESULTS_DIR))
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for n in args.sizes:
            folder = folder_of(n, tmp)
            out_json, out_parquet = Path(tmp) / f"detect_{n}.json", Path(tmp) / f"batch_{n}"
            for name, command in (
                    ("fkp-detect FOLDER --json out.json",
                     [BIN / "fkp-detect", folder, "--json", out_json, "--quiet"]),
                    (f"fkp-batch FOLDER OUT/ (local Ray, {os.cpu_count()} CPUs)",
                     [BIN / "fkp-batch", folder, out_parquet, "--quiet"])):
                seconds, rss, pss, most = measure([str(c) for c in command])
                runs[name, n] = seconds
                rows.append({"command": name, "images": n, "wall s": round(seconds, 2),
                             "images/s": round(n / seconds, 1),
                             "peak RSS sum MB": round(rss), "peak PSS sum MB": round(pss),
                             "processes": most, "faces": None, "Parquet bytes per face": None,
                             "fixed cost s (worked out)": None})
                print(rows[-1], flush=True)
            detect_faces, batch_faces = faces_in_json(out_json), faces_in_parquet(out_parquet)
            if detect_faces != batch_faces:
                raise SystemExit(f"{n} images: fkp-detect found {detect_faces} faces, fkp-batch "
                                 f"{batch_faces}")
            rows[-2]["faces"] = rows[-1]["faces"] = batch_faces
            rows[-1]["Parquet bytes per face"] = round(parquet_bytes(out_parquet) /
                                                       max(batch_faces, 1))
        small, large = sorted(args.sizes)[-2:]
        for name in dict.fromkeys(k[0] for k in runs):
            rate = (large - small) / (runs[name, large] - runs[name, small])
            rows.append({"command": f"{name}: images {small + 1:,}-{large:,} alone",
                         "images": large - small,
                         "wall s": round(runs[name, large] - runs[name, small], 2),
                         "images/s": round(rate, 1), "peak RSS sum MB": None,
                         "peak PSS sum MB": None, "processes": None, "faces": None,
                         "Parquet bytes per face": None,
                         "fixed cost s (worked out)": round(runs[name, large] - large / rate, 1)})
        rate, n = collector_rate(Path(tmp) / f"batch_{large}", tmp)
        rows.append({"command": "fkp-batch's own process alone (job.Collector: records in, "
                                "Parquet out), in this process", "images": n,
                     "wall s": round(n / rate, 2), "images/s": round(rate, 1),
                     "peak RSS sum MB": None, "peak PSS sum MB": None, "processes": 1,
                     "faces": None, "Parquet bytes per face": None,
                     "fixed cost s (worked out)": None})
        print(rows[-1], flush=True)
    path = write_table(rows, args.out, "batch",
                       f"fkp-batch (Ray Data) against fkp-detect on the same course training "
                       f"frames, each a new process with its defaults ({os.cpu_count()} cores)")
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
