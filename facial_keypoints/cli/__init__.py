"""The commands (``fkp-*``): each module parses its arguments and calls the package.

``fkp-detect`` runs on the light install. The others need an extra: ``fkp-train``,
``fkp-evaluate``, ``fkp-ship``, ``fkp-export`` and ``fkp-fetch-data`` the ``[train]`` extra
(PyTorch, pandas), ``fkp-serve`` the ``[serve]`` extra (the web page and API), ``fkp-batch``
the ``[scale]`` extra (Ray Data). Their entry points below (``fkp_train`` for ``fkp-train``,
...) start them, or say in one line which extra to install where it is missing.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from contextlib import contextmanager

from facial_keypoints.detection import DETECTORS
from facial_keypoints.landmarks import MARKUPS
from facial_keypoints.paths import DEFAULT_MODEL

TRAIN_EXTRA = "pip install 'facial-keypoints[train]'"
#: What each extra brings (top-level module names): a command that cannot import one of its
#: extra's modules says in one line what to install.
EXTRA_PACKAGES = {
    "train": {"torch", "torchvision", "pandas", "matplotlib", "onnx", "onnxscript"},
    "serve": {"fastapi", "fastapi_offline", "starlette", "uvicorn", "multipart",
              "python_multipart", "pydantic", "websockets"},
    "scale": {"ray", "pyarrow", "fsspec", "pandas"},
}


def missing_extra(prog, error, extra="train") -> int:
    """One line for a command started where its extra is not installed; exit status 2."""
    print(f"{prog}: error: this command needs the [{extra}] extra (no module named "
          f"{error.name!r}): pip install 'facial-keypoints[{extra}]'", file=sys.stderr)
    return 2


class Terminated(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM): handled as Ctrl-C is, with exit status 143."""


@contextmanager
def stop_on_sigterm():
    """Inside the block, SIGTERM raises ``Terminated`` (a ``KeyboardInterrupt``) so that the
    command can keep its finished work and clean up, as for Ctrl-C (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted(prog, interruption, detail="") -> int:
    """One line for a command stopped by Ctrl-C or SIGTERM; its exit status, 128 + the
    signal's number as shells report it (130 for Ctrl-C, 143 for SIGTERM)."""
    term = isinstance(interruption, Terminated)
    print(f"{prog}: interrupted ({'SIGTERM' if term else 'Ctrl-C'}){detail}", file=sys.stderr)
    return 128 + (signal.SIGTERM if term else signal.SIGINT)


def interruptible(prog, command, detail=""):
    """``command()`` with SIGTERM handled as Ctrl-C (``stop_on_sigterm``); either is one line
    (``interrupted``) and its exit status, not a traceback."""
    try:
        with stop_on_sigterm():
            return command()
    except KeyboardInterrupt as e:
        return interrupted(prog, e, detail)


def int_at_least(low):
    """An argparse type: an integer >= ``low`` (a usage error otherwise)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def add_pipeline_options(p, detector=True):
    """The options that say which pipeline runs, the same for every command that runs one:
    ``--model`` and (with ``detector``) ``--detector``, ``--markup``, ``--min-confidence``
    (``KeypointPipeline``'s arguments of those names)."""
    if detector:
        p.add_argument("--detector", choices=sorted(DETECTORS), default=next(iter(DETECTORS)),
                       help="face detector: blazeface (MediaPipe's, any tilt) or haar (the "
                            "course's OpenCV cascade, upright faces; default: %(default)s)")
        p.add_argument("--markup", choices=MARKUPS, default=None,
                       help="for a model with one head per mark-up: the iBUG 300-W standard "
                            "(default) or the course dataset's")
        p.add_argument("--min-confidence", type=fraction, default=None, metavar="P",
                       help="drop a detected face whose confidence (the probability that its "
                            "fit is good) is below P; 0 keeps every detection (default: the "
                            "model's own threshold, chosen on held-out faces; the model card "
                            "gives it)")
    p.add_argument("--model", default=str(DEFAULT_MODEL), metavar="FILE",
                   help="checkpoint written by train.py, or its .onnx export (default: the "
                        "shipped model)")


def fraction(text):
    """An argparse type: a number from 0 to 1 (a usage error otherwise)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text}")
    return value


#: What an interrupted command says it kept.
INTERRUPTED = {"train": ": the last finished epoch is in the run's last.pt; run the same command "
                        "with --resume to continue",
               "serve": ": the server stopped"}


def run_command(module, prog, argv=None, extra="train"):
    """``facial_keypoints.cli.<module>.main(argv)``, or the one line of ``missing_extra`` when
    the module cannot import a package of its ``extra``; Ctrl-C or SIGTERM is one line
    (``interrupted``), not a traceback."""
    def command():
        try:
            main = importlib.import_module(f"{__name__}.{module}").main
        except ImportError as e:
            if (e.name or "").split(".")[0] not in EXTRA_PACKAGES[extra]:
                raise
            return missing_extra(prog, e, extra)
        return main(argv)

    # every file the commands write is written atomically
    return interruptible(prog, command, INTERRUPTED.get(
        module, ": every file written so far is complete"))


def fkp_train(argv=None):
    return run_command("train", "fkp-train", argv)


def fkp_evaluate(argv=None):
    return run_command("evaluate", "fkp-evaluate", argv)


def fkp_ship(argv=None):
    return run_command("ship", "fkp-ship", argv)


def fkp_export(argv=None):
    return run_command("export", "fkp-export", argv)


def fkp_fetch_data(argv=None):
    return run_command("fetch_data", "fkp-fetch-data", argv)


def fkp_serve(argv=None):
    return run_command("serve", "fkp-serve", argv, extra="serve")


def fkp_batch(argv=None):
    return run_command("batch", "fkp-batch", argv, extra="scale")
