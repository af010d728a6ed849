"""The house rules of kernelfit/, checked on the source with ``ast`` (nothing is imported):

- no import cycle among kernelfit's modules; imports inside functions count;
- CuPy (``cupy``, ``cupyx``, ``cupy_backends``) is imported only by the backend
  (``kernelfit/backend.py`` or a ``kernelfit/backend/`` package);
- ``argparse`` is imported only under ``kernelfit/cli/``;
- no module has more than 600 lines.

The analysis is the one of the project's house check: a module's edges are every
``import``/``from ... import`` anywhere in it (and ``importlib.import_module('name')`` with a
literal name) that names another kernelfit module; package ``__init__`` modules are not
nodes (they only gather their submodules' names).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 600
CUPY_ROOTS = ("cupy", "cupyx", "cupy_backends")


def _modules(project: Path) -> Dict[str, Path]:
    mods = {}
    for p in sorted((project / "kernelfit").rglob("*.py")):
        rel = p.relative_to(project).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        mods[".".join(parts)] = p
    return mods


def _imported_names(path: Path, name: str) -> List[str]:
    """Every module name ``path`` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = base[:len(base) - node.level + 1]
                mod = ".".join(pkg + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out += [mod] + [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call):
            func = node.func
            fname = getattr(func, "attr", getattr(func, "id", ""))
            if (fname in ("import_module", "__import__") and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)):
                out.append(node.args[0].value)
    return out


def analyse(project: Path) -> dict:
    """Cycles, CuPy importers, argparse importers and long modules of ``project``."""
    mods = _modules(project)
    edges: Dict[str, Set[str]] = {}
    cupy, argparse_users, long_modules = set(), set(), []
    for name, path in mods.items():
        n_lines = path.read_text().count("\n")
        if n_lines > MAX_LINES:
            long_modules.append(f"{path.relative_to(project)} ({n_lines} lines)")
        targets = _imported_names(path, name)
        for t in targets:
            if t.split(".")[0] in CUPY_ROOTS:
                cupy.add(name)
            if t == "argparse":
                argparse_users.add(name)
        if path.name != "__init__.py":
            edges[name] = {t for t in targets if t in mods and t != name
                           and mods[t].name != "__init__.py"}
    return {"cycles": _cycles(edges), "cupy": sorted(cupy),
            "argparse": sorted(argparse_users), "long": long_modules}


def _cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    out: List[List[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in edges:
                    continue
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def _is_backend(module: str) -> bool:
    return module == "kernelfit.backend" or module.startswith("kernelfit.backend.")


def _is_cli(module: str) -> bool:
    return module == "kernelfit.cli" or module.startswith("kernelfit.cli.")


@pytest.fixture(scope="module")
def house():
    return analyse(ROOT)


def test_no_import_cycles(house):
    assert house["cycles"] == [], "import cycles: " + "; ".join(
        " <-> ".join(c) for c in house["cycles"])


def test_cupy_only_in_the_backend(house):
    outside = [m for m in house["cupy"] if not _is_backend(m)]
    assert outside == [], f"CuPy imported outside the backend: {outside}"


def test_argparse_only_in_the_cli(house):
    outside = [m for m in house["argparse"] if not _is_cli(m)]
    assert outside == [], f"argparse imported outside kernelfit/cli/: {outside}"


def test_modules_under_600_lines(house):
    assert house["long"] == [], f"modules over {MAX_LINES} lines: {house['long']}"


# ---------------------------------------------------------------- the check can fail
def _write(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def test_the_analysis_finds_what_it_looks_for(tmp_path):
    """A toy project with every fault: a cycle through a function-level relative import,
    CuPy and argparse where they do not belong, and a long module."""
    _write(tmp_path, "kernelfit/__init__.py", "")
    _write(tmp_path, "kernelfit/a.py", "from .b import f\n")
    _write(tmp_path, "kernelfit/b.py", "def f():\n    from . import a\n    return a\n")
    _write(tmp_path, "kernelfit/c.py", "import importlib\nimportlib.import_module('cupy')\n")
    _write(tmp_path, "kernelfit/backend.py", "import cupy\n")
    _write(tmp_path, "kernelfit/sub/__init__.py", "")
    _write(tmp_path, "kernelfit/sub/d.py", "def g():\n    import argparse\n")
    _write(tmp_path, "kernelfit/cli/__init__.py", "import argparse\n")
    _write(tmp_path, "kernelfit/long.py", "x = 1\n" * (MAX_LINES + 1))
    h = analyse(tmp_path)
    assert h["cycles"] == [["kernelfit.a", "kernelfit.b"]]
    assert [m for m in h["cupy"] if not _is_backend(m)] == ["kernelfit.c"]
    assert [m for m in h["argparse"] if not _is_cli(m)] == ["kernelfit.sub.d"]
    assert len(h["long"]) == 1 and "long.py" in h["long"][0]


def test_the_analysis_passes_a_clean_project(tmp_path):
    _write(tmp_path, "kernelfit/__init__.py", "from . import a\n")
    _write(tmp_path, "kernelfit/a.py", "from .b import f\nimport numpy\n")
    _write(tmp_path, "kernelfit/b.py", "def f():\n    from .backend import xp\n")
    _write(tmp_path, "kernelfit/backend.py", "def xp():\n    import cupy\n")
    h = analyse(tmp_path)
    assert h == {"cycles": [], "cupy": ["kernelfit.backend"], "argparse": [], "long": []}
