"""What a program can check of the committed notebooks: they carry the outputs of one full,
clean run, and the figures their static text quotes are checked where they are stated.

The figures in the sentences the notebooks print (``display(Markdown(f"..."))``) come from the
variables that hold them; these tests check the rest: no measured percentage is written into a
Markdown cell by hand, the time each notebook states at its top is the bound its last cell
asserts, and the outputs hold no error, no warning and no progress-bar debris.
"""
from __future__ import annotations

import json
import re

import pytest

from helpers_keypoints import ROOT

NOTEBOOKS = ["1_Load_and_Visualize.ipynb", "2_Define_Train_CNN.ipynb", "3_Haar_Detection.ipynb",
             "4_Fun_Filters.ipynb"]
#: definitions, not measurements: "FR@8 %" and "NME above 8 %" name the failure rate
DEFINITIONS = re.compile(r"FR@8 %|above 8 %")


def cells(name):
    return json.loads((ROOT / name).read_text(encoding="utf-8"))["cells"]


def text(cell):
    return "".join(cell["source"])


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_no_measured_percentage_is_typed_into_markdown(name):
    for i, cell in enumerate(cells(name)):
        if cell["cell_type"] == "markdown":
            typed = re.findall(r"\d+(?:\.\d+)? ?%", DEFINITIONS.sub("", text(cell)))
            assert not typed, f"{name} cell {i}: {typed} (print it from a variable instead)"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_time_stated_at_the_top_is_what_the_last_cell_asserts(name):
    all_cells = cells(name)
    top = text(all_cells[0])
    assert "**Before you start.**" in top, f"{name} does not say what it needs first"
    stated = re.search(r"A full\s+run takes (?:about|less than) (a|\d+)\s+minutes?", top)
    assert stated, f"{name} does not state its run time at the top"
    bound = int(re.search(r"STATED_MINUTES = (\d+)", text(all_cells[1])).group(1))
    minutes = 1 if stated.group(1) == "a" else int(stated.group(1))
    assert minutes <= bound
    last = [c for c in all_cells if c["cell_type"] == "code"][-1]
    assert "assert FAST or total_minutes <= STATED_MINUTES" in text(last)
    took = re.search(r"this run took (\d+(?:\.\d+)?) minutes",
                     "".join("".join(o.get("text", "")) for o in last["outputs"]))
    assert took and float(took.group(1)) <= bound, f"{name}: the committed run took longer"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_committed_outputs_are_one_clean_full_run(name):
    code = [c for c in cells(name) if c["cell_type"] == "code"]
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{name}: not one run, top to bottom"
    for i, cell in enumerate(code):
        for out in cell["outputs"]:
            assert out["output_type"] != "error", f"{name}: code cell {i} failed"
            assert out.get("name") != "stderr", f"{name}: code cell {i} wrote to stderr"
            assert "\r" not in "".join(out.get("text", "")), f"{name}: progress-bar debris"
    first = "".join("".join(o.get("text", "")) for o in code[0]["outputs"])
    assert "fast" not in first.lower() or name.startswith("4_"), f"{name}: a fast-mode run"
