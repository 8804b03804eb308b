"""The commands (``fkp-*``): each module parses its arguments and calls the package.

``fkp-detect`` runs on the light install. The others train, evaluate, ship, export or fetch the
training data and need the ``[train]`` extra (PyTorch, pandas): their entry points below
(``fkp_train`` for ``fkp-train``, ...) start them, or say in one line which extra to install
where it is missing.
"""
from __future__ import annotations

import importlib
import sys

TRAIN_EXTRA = "pip install 'facial-keypoints[train]'"
#: What the [train] extra brings: a command that cannot import one of these says so.
TRAIN_PACKAGES = {"torch", "torchvision", "pandas", "matplotlib", "onnx", "onnxscript"}


def missing_extra(prog, error) -> int:
    """One line for a command started where its extra is not installed; exit status 2."""
    print(f"{prog}: error: this command needs the [train] extra (no module named "
          f"{error.name!r}): {TRAIN_EXTRA}", file=sys.stderr)
    return 2


def _run(module, prog, argv=None):
    """``facial_keypoints.cli.<module>.main(argv)``, or the one line of ``missing_extra`` when
    the module cannot import a package of the [train] extra (an optional back-end)."""
    try:
        main = importlib.import_module(f"{__name__}.{module}").main
    except ImportError as e:
        if (e.name or "").split(".")[0] not in TRAIN_PACKAGES:
            raise
        return missing_extra(prog, e)
    return main(argv)


def fkp_train(argv=None):
    return _run("train", "fkp-train", argv)


def fkp_evaluate(argv=None):
    return _run("evaluate", "fkp-evaluate", argv)


def fkp_ship(argv=None):
    return _run("ship", "fkp-ship", argv)


def fkp_export(argv=None):
    return _run("export", "fkp-export", argv)


def fkp_fetch_data(argv=None):
    return _run("fetch_data", "fkp-fetch-data", argv)
