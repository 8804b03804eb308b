"""``fkp-batch``: keypoints for a whole collection of photos on Ray Data, into a Parquet dataset;
on this machine (a local Ray, started and stopped by the command) or on a Ray cluster.

    fkp-batch photos/ out/                         # every image of photos/ -> out/*.parquet
    fkp-batch 's3://bucket/photos/**/*.jpg' s3://bucket/keypoints/ --address auto
    fkp-batch list.txt out/ --workers 8            # a text file of paths or URIs

Run it again to continue: the images already in OUTPUT are skipped. ``fkp-batch --help``
documents every option; the work is ``facial_keypoints.scale`` (needs the ``[scale]`` extra).
"""
from __future__ import annotations

import argparse
import sys
import time

from facial_keypoints import __version__
from facial_keypoints.cli import (
    add_pipeline_options,
    fraction,
    int_at_least,
    interrupted,
    stop_on_sigterm,
)
from facial_keypoints.detection.base import DetectorWeightsError
from facial_keypoints.keypoints.pipeline import KeypointPipeline
from facial_keypoints.keypoints.runtime import ModelLoadError
from facial_keypoints.scale.job import (
    JobError,
    Tally,
    pipeline_options,
    ray_session,
    run,
    worker_pool,
)
from facial_keypoints.scale.sources import SourceError, list_images
from facial_keypoints.scale.store import Dataset, model_settings

PROG = "fkp-batch"


def build_parser():
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Find every face in a whole collection of images and put 68 keypoints on "
                    "each, on Ray Data: a pool of workers, each with its own pipeline, on this "
                    "machine or on a Ray cluster. The results are a Parquet dataset: one row per "
                    "face, one per image without a face or that could not be read.",
        epilog="Rows: path, face (index; null for an image with no face or an error), width, "
               "height, box [x, y, w, h], keypoints (68 [x, y]), score, confidence, roll, markup, "
               "error: the values of fkp-detect --json. Run the same command again to continue "
               "an interrupted run: the images already in OUTPUT are skipped, and no image gets "
               "rows twice (each Parquet file is written whole or not at all). Ctrl-C or SIGTERM "
               "writes what was done, then stops (exit status 130 or 143). Exit status: 0 when "
               "every image was read, 1 when some could not be (their rows say why), 2 for bad "
               "usage, an INPUT with no image, or an OUTPUT that cannot be used.")
    p.add_argument("input", metavar="INPUT",
                   help="a folder of images, a glob ('photos/**/*.jpg', quoted) or a text file "
                        "(.txt, .lst, .list) of paths or URIs, one per line; local or on any "
                        "file system fsspec reaches (s3://, gs://, ...: its package installed)")
    p.add_argument("output", metavar="OUTPUT",
                   help="a folder (local or a URI) for the Parquet dataset: new, empty, or "
                        "written by an earlier run with the same settings (continued)")
    p.add_argument("--recursive", "-r", action="store_true",
                   help="a folder's subfolders too")
    p.add_argument("--address", metavar="ADDR",
                   help="join this Ray cluster ('auto': the one started on this machine with "
                        "'ray start', or $RAY_ADDRESS; or HOST:6379) instead of starting a local "
                        "Ray; every node needs facial-keypoints[scale] installed and the INPUT's "
                        "files (a shared file system or an object store)")
    p.add_argument("--num-cpus", type=int_at_least(1), metavar="N",
                   help="the local Ray's CPUs (default: all of this machine's); not with "
                        "--address")
    p.add_argument("--workers", type=int_at_least(1), metavar="N",
                   help="workers in the pool, each with its own pipeline (default: as many as "
                        "the CPUs, or GPUs, of Ray allow)")
    p.add_argument("--cpus-per-worker", type=int_at_least(1), default=1, metavar="N",
                   help="CPUs (threads) each worker takes (default: %(default)s)")
    p.add_argument("--gpus-per-worker", type=fraction, default=0.0, metavar="G",
                   help="GPU share of each worker, e.g. 1 or 0.5 (two workers per GPU); over 0, "
                        "the keypoint model runs on PyTorch and CUDA (the [train] extra on the "
                        "workers) and the detector on the CPU (default: %(default)s)")
    p.add_argument("--batch-size", type=int_at_least(1), default=16, metavar="N",
                   help="images a worker takes at a time, their faces through the network "
                        "together (default: %(default)s)")
    p.add_argument("--images-per-file", type=int_at_least(1), default=10_000, metavar="N",
                   help="images per Parquet file (a file is also written at least once a "
                        "minute): what an interrupted run loses at most (default: %(default)s)")
    add_pipeline_options(p)   # --model: a path every node can read (README)
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar or summary (both go to standard error)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.address and args.num_cpus:
        return usage_error("--num-cpus sizes the local Ray: with --address, the cluster has "
                           "the CPUs it was started with")
    if args.gpus_per_worker and args.model.lower().endswith(".onnx"):
        return usage_error("--gpus-per-worker runs the keypoint model on PyTorch: give the "
                           "checkpoint (.pt), not its .onnx export")
    options = pipeline_options(args.model, args.detector, args.markup, args.min_confidence,
                               args.gpus_per_worker)
    try:
        names = list_images(args.input, args.recursive)
        # the model and detector checked here (on the CPU), not in Ray
        checked = KeypointPipeline(**{**options, "backend": "onnx", "device": "cpu"})
        dataset = Dataset(args.output)
        done = dataset.open(model_settings(checked, args.detector))
    except (SourceError, ValueError, ModelLoadError, DetectorWeightsError) as e:
        return usage_error(e)
    del checked
    todo = sum(n not in done for n in names)
    say = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr))
    say(f"{len(names)} image(s) in {args.input}: {len(names) - todo} already in "
        f"{args.output}, {todo} to do")
    if dataset.temporaries():
        say(f"  note: {len(dataset.temporaries())} temporary file(s) left in {args.output} by an "
            f"interrupted run (.part-*): not part of the dataset, safe to delete")
    if not todo:
        return failed_before(dataset, args.output, say)
    tally, t0 = Tally(), time.perf_counter()
    try:
        with ray_session(args.address, args.num_cpus), stop_on_sigterm():
            run(names, dataset, options, worker_pool(args.workers, args.cpus_per_worker,
                                                  args.gpus_per_worker, args.batch_size),
                done, args.images_per_file, progress=not args.quiet, tally=tally)
    except (JobError, OSError) as e:   # OSError: OUTPUT could not be written (disk full, ...)
        print(f"{PROG}: error: {e}; the files written before are complete, in {args.output}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        return interrupted(PROG, e, f": {tally.images} image(s) done and written to "
                                    f"{args.output}; run the same command again to continue")
    if not args.quiet:
        summarize(tally, args.output, t0)
    return 1 if tally.failed else failed_before(dataset, args.output, say)


def failed_before(dataset, output, say) -> int:
    """Exit status 1, and how to try them again, where earlier runs left images that could
    not be read (their rows hold the reason): a rerun does not redo them."""
    if not dataset.failed:
        return 0
    say(f"  {dataset.failed} image(s) in {output} have an error row (unreadable, or the model "
        f"failed on them; the error column says why): a rerun does not try them again; to do "
        f"so, list their paths in a text file and run fkp-batch on it with another OUTPUT")
    return 1


def usage_error(message) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def summarize(tally, output, t0):
    """The summary line: the rate with Ray's start, and from the first images back (what a
    longer run of such images gets), then the errors."""
    now = time.perf_counter()
    seconds, start = now - t0, (tally.first or now) - t0
    later = tally.images - tally.first_images   # those that came after the first ones
    after = f"; {later / (now - tally.first):.1f} images/s after the first came back at " \
            f"{start:.1f} s (Ray's start)" if later and now > tally.first else ""
    print(f"{tally.images} image(s), {tally.faces} face(s), {tally.no_face} without a face, "
          f"{tally.failed} error(s), {seconds:.1f} s ({tally.images / max(seconds, 1e-9):.1f} "
          f"images/s{after}) -> {output} ({len(tally.files)} file(s))", file=sys.stderr)
    for message in tally.errors:
        print(f"  error: {message}", file=sys.stderr)
    if tally.failed > len(tally.errors):
        print(f"  ... and {tally.failed - len(tally.errors)} more: see the error column",
              file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
