"""The commands (``fkp-*``): each parses its arguments and calls the package."""

import sys

#: The commands that need the ``[train]`` extra (PyTorch, pandas), and what they do.
TRAIN_EXTRA = "pip install 'facial-keypoints[train]'"


def missing_extra(prog, error) -> int:
    """One line for a command started where its extra is not installed; exit status 2."""
    print(f"{prog}: error: this command needs the [train] extra ({error}): {TRAIN_EXTRA}",
          file=sys.stderr)
    return 2
