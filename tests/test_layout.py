"""The layout of the code: one package whose folders name its jobs, imports at the top and
pointing one way, thin commands, and the shipped model run without PyTorch.

* The package (``facial_keypoints``) never imports the course's top-level modules
  (``models.py``, ``data_load.py``, the thin commands), the benchmarks or the tests.
* A project import sits at the top of its file; the one exception is an optional back-end
  (``OPTIONAL_IMPORTS``: PyTorch's runtime and the ONNX export, loaded only when asked for).
* The package's modules import each other without a cycle.
* A command imports no other command: ``cli/`` modules import the library, never each other;
  the benchmark scripts share ``benchmarks/common.py``, never each other; a top-level command
  (the course's name for a ``cli`` one) imports only the package (and the course's ``models``).
* No code file is over 650 lines; only ``paths.py`` finds files from its own location.
* Running the shipped model (the detector, the pipeline, ``fkp-detect``) imports no PyTorch,
  torchvision or pandas.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers_keypoints import ROOT

PACKAGE = ROOT / "facial_keypoints"
TOP_LEVEL = sorted(p.stem for p in ROOT.glob("*.py"))
PACKAGE_FILES = sorted(PACKAGE.rglob("*.py"))
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))
#: (module, module it may import inside a function): optional back-ends only.
OPTIONAL_IMPORTS = {
    ("facial_keypoints.keypoints.runtime", "facial_keypoints.keypoints.export"),
    ("facial_keypoints.keypoints.runtime", "facial_keypoints.keypoints.checkpoints"),
}
MAX_LINES = 650


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path):
    """(module imported, line, at the top level?) for each import in a file (an import in a
    module-level ``try`` is at the top; one in a function or class is not)."""
    tree = ast.parse(path.read_text())
    inside = {id(n) for f in ast.walk(tree)        # imports in a function or class body
              if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
              for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found += [(n, node.lineno, id(node) not in inside) for n in names]
    return found


def project_modules():
    return {module_name(p) for p in PACKAGE_FILES + BENCHMARKS} | set(TOP_LEVEL)


def project_imports(path: Path):
    known = project_modules()
    return [(n, line, top) for n, line, top in imports(path) if n in known]


def is_course_or_bench(name):
    return name in TOP_LEVEL or name.split(".")[0] in ("benchmarks", "tests", "conftest",
                                                      "helpers_keypoints")


@pytest.mark.parametrize("path", PACKAGE_FILES, ids=lambda p: module_name(p))
def test_the_package_imports_only_itself_at_the_top(path):
    me = module_name(path)
    for name, line, top in imports(path):
        assert not is_course_or_bench(name), \
            f"{path.relative_to(ROOT)}:{line} imports {name}: the package never imports the " \
            f"course's top-level modules, the benchmarks or the tests"
        if name in project_modules() and not top:
            assert (me, name) in OPTIONAL_IMPORTS, \
                f"{path.relative_to(ROOT)}:{line} imports {name} inside a function: move it " \
                f"to the top (only optional back-ends may wait: OPTIONAL_IMPORTS)"


def test_package_imports_have_no_cycle():
    graph = {module_name(p): {n for n, _, top in project_imports(p) if top and n != module_name(p)}
             for p in PACKAGE_FILES}
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph.get(node, ()):
            assert state.get(nxt) != "open", "import cycle: " + " -> ".join(stack + [nxt])
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])


def commands():
    """(file, its command group) for every file that is a command."""
    out = [(p, "cli") for p in (PACKAGE / "cli").glob("*.py") if p.name != "__init__.py"]
    out += [(p, "benchmarks") for p in BENCHMARKS if "def main(" in p.read_text()]
    out += [(ROOT / f"{m}.py", "top") for m in TOP_LEVEL
            if "__main__" in (ROOT / f"{m}.py").read_text()]
    return out


@pytest.mark.parametrize("path,group", commands(), ids=lambda v: getattr(v, "name", v))
def test_no_command_imports_another_command(path, group):
    # a top-level command is the course's name for one of the package's (its cli module)
    others = {module_name(p) for p, g in commands()
              if p != path and not (group == "top" and g == "cli")}
    for name, line, _ in project_imports(path):
        assert name not in others, f"{path.relative_to(ROOT)}:{line} imports the command {name}"
        if group == "top":
            assert name.startswith("facial_keypoints") or name == "models", \
                f"{path.name}:{line} imports {name}: a top-level command only calls the package"


@pytest.mark.parametrize("path", PACKAGE_FILES + BENCHMARKS + [ROOT / f"{m}.py" for m in TOP_LEVEL],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_code_file_is_too_long_or_finds_files_by_itself(path):
    text = path.read_text()
    assert text.count("\n") <= MAX_LINES, f"{path.relative_to(ROOT)} is over {MAX_LINES} lines"
    if path != PACKAGE / "paths.py":
        assert "__file__" not in text, \
            f"{path.relative_to(ROOT)} finds files from its own location: use paths.py"


def test_the_checker_catches_a_wrong_import(tmp_path):
    """The checks above can fail: an import inside a function and a course import are seen."""
    bad = tmp_path / "bad.py"
    bad.write_text("import numpy\n\ndef f():\n    import data_load\n")
    assert ("data_load", 4, False) in imports(bad)
    assert is_course_or_bench("data_load") and is_course_or_bench("benchmarks.common")
    assert not is_course_or_bench("facial_keypoints.paths")


BLOCK_HEAVY = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('torch', 'torchvision', 'pandas', 'matplotlib'):
            raise ModuleNotFoundError('No module named ' + repr(name), name=name)
sys.meta_path.insert(0, Block())
"""


def test_the_shipped_model_runs_without_torch(tmp_path):
    """The detector, the pipeline and fkp-detect on the bundled photo with PyTorch, torchvision,
    pandas and matplotlib made unimportable, as in the light install."""
    out = tmp_path / "out.json"
    code = BLOCK_HEAVY + f"""
from facial_keypoints import KeypointPipeline
from facial_keypoints.cli.detect import main
faces = KeypointPipeline().get_landmarks({str(PACKAGE / 'samples' / 'astronaut.jpg')!r})
assert len(faces) == 1 and faces[0].keypoints.shape == (68, 2)
sys.exit(main(['--json', {str(out)!r}, '--quiet']))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert out.is_file() and (tmp_path / "out" / "annotated").is_dir() is not False


def test_the_courses_detect_py_runs_the_shipped_model_without_torch(tmp_path):
    """``python detect.py`` registers the course's Net (models.py, PyTorch) only when a
    checkpoint is read with PyTorch: --help and the shipped model never load it."""
    out = tmp_path / "out.json"
    for args in (["--help"], [str(PACKAGE / "samples" / "astronaut.jpg"), "--json", str(out)]):
        code = BLOCK_HEAVY + f"""
import runpy
sys.argv = ['detect.py', *{args!r}]
sys.path.insert(0, {str(ROOT)!r})
runpy.run_path({str(ROOT / 'detect.py')!r}, run_name='__main__')
"""
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    assert len(json.loads(out.read_text())["images"][0]["faces"]) == 1


def test_the_torch_backend_without_torch_names_the_extra(tmp_path):
    code = BLOCK_HEAVY + """
from facial_keypoints import KeypointPipeline
from facial_keypoints.keypoints.runtime import ModelLoadError
try:
    KeypointPipeline(backend='torch')
except ModelLoadError as e:
    print(e)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert "pip install 'facial-keypoints[train]'" in done.stdout, done.stderr


@pytest.mark.parametrize("command", ["train", "evaluate", "ship", "export", "fetch_data"])
def test_a_training_command_without_torch_names_the_extra(tmp_path, command):
    """The fkp-* entry points of the commands that need PyTorch (``cli.train`` etc.)."""
    code = BLOCK_HEAVY + f"""
from facial_keypoints import cli
sys.exit(cli.fkp_{command}(['--help']))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "pip install 'facial-keypoints[train]'" in line and "Traceback" not in line
