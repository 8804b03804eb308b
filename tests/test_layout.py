"""The layout of the code: every module in its layer, imports at the top and pointing down.

A module may import only modules of lower layers (library modules below the jobs that use
them), and only at the top of the file, never inside a function: the README's "imports go one
way" is this test.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Lowest first. Library modules, then the jobs (commands) built from them.
LAYERS = [
    ["landmarks", "utils"],
    ["metrics", "images"],
    ["data_load", "models"],
    ["fetch_data", "detectors", "face_geometry", "art", "export", "drawing"],
    ["blazeface", "data_300w", "filters", "tracking"],
    ["pipeline"],
    ["evaluate", "train"],
    ["detect", "benchmark", "ship", "label_noise"],
    ["benchmark_detection", "experiments", "variants"],
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}
MODULES = sorted(p.stem for p in ROOT.glob("*.py"))


def project_imports(path):
    """(module imported, line, at the top level?) for each import of a project module."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module.split(".")[0]]
        else:
            continue
        found += [(n, node.lineno, id(node) in top) for n in names if n in MODULES]
    return found


def test_every_module_has_a_layer():
    assert sorted(LAYER) == MODULES, "place each new module in LAYERS (and the README's table)"


@pytest.mark.parametrize("module", MODULES)
def test_imports_are_at_the_top_and_point_down(module):
    for name, line, at_top in project_imports(ROOT / f"{module}.py"):
        assert at_top, f"{module}.py:{line} imports {name} inside a function: move it to the top"
        assert LAYER[name] < LAYER[module], \
            f"{module}.py:{line} imports {name}, which is not below it (layers: {LAYERS})"


def test_nothing_imports_a_notebook_or_a_test():
    for module in MODULES:
        text = (ROOT / f"{module}.py").read_text()
        assert "ipynb" not in "".join(n for n, _, _ in project_imports(ROOT / f"{module}.py"))
        assert "import conftest" not in text and "helpers_keypoints" not in text


def test_the_checker_catches_a_wrong_import(tmp_path, monkeypatch):
    """The test above can fail: an import inside a function and one pointing up are caught."""
    bad = tmp_path / "metrics.py"
    bad.write_text("import numpy\n\ndef f():\n    import data_load\n")
    assert project_imports(bad) == [("data_load", 4, False)]
    bad.write_text("import pipeline\n")
    assert project_imports(bad) == [("pipeline", 1, True)]
    assert LAYER["pipeline"] > LAYER["metrics"]
