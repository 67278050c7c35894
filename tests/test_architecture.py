"""The package's layers: every module imports, none imports a module of a higher layer, no import cycles.

Layers, lowest first (a module may import its own layer and those below it):

    0 errors
    1 io                                              (pairless.io.*)
    2 config, noise, denoiser, nets, metrics, sim     (the foundations)
    3 inference
    4 training
    5 methods
    6 bmz
    7 api
    8 cli, napari, experiments, __main__              (the front ends)

The package face ``pairless/__init__.py`` imports ``errors`` and, lazily (inside a function), ``api``;
any module may import the face itself (``__version__``, ``PairlessError``), but a name of the API taken
from the face (``from pairless import fit``) counts as an import of ``pairless.api``.

Imports are read from the source with ``ast``, function-level ones included, so an import hidden in a
function to dodge a cycle still has to respect the layers.  The cycle check looks at the imports that
run when a module is imported (module and class bodies, not functions or ``if TYPE_CHECKING:``).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import pairless

ROOT = Path(pairless.__file__).resolve().parent
FACE = "pairless"

LAYER_NAMES = ["errors", "io", "foundations", "inference", "training", "methods", "bmz", "api", "front ends"]
LAYERS = {
    "errors": 0,
    "io": 1,
    "config": 2,
    "noise": 2,
    "noise_psd": 2,
    "denoiser": 2,
    "nets": 2,
    "metrics": 2,
    "sim": 2,
    "inference": 3,
    "training": 4,
    "methods": 5,
    "bmz": 6,
    "api": 7,
    "cli": 8,
    "napari": 8,
    "experiments": 8,
    "__main__": 8,
}


def _walk() -> dict[str, bool]:
    """Every module of the package, by name, and whether it is a package (pkgutil imports the packages)."""
    found = {FACE: True}
    for info in pkgutil.walk_packages(pairless.__path__, f"{FACE}.", onerror=lambda name: None):
        found[info.name] = info.ispkg
    return found


MODULES = _walk()


def _source(name: str) -> Path:
    relative = Path(*name.split(".")[1:])
    return ROOT / relative / "__init__.py" if MODULES[name] else (ROOT / relative).with_suffix(".py")


def _layer(name: str) -> int:
    if name == FACE:
        return 0  # its eager contents are errors' only
    top = name.split(".")[1]
    if top not in LAYERS:
        raise AssertionError(f"{name} is in no layer; add pairless.{top} to LAYERS in {__file__}")
    return LAYERS[top]


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    line: int
    runs_on_import: bool  # module or class body, outside `if TYPE_CHECKING:`

    def __str__(self) -> str:
        return (
            f"{self.importer} (layer {_layer(self.importer)}) -> {self.imported} (layer"
            f" {_layer(self.imported)})  [{_source(self.importer).relative_to(ROOT.parent)}:{self.line}]"
        )


def _known(name: str) -> str:
    """The pairless module ``name`` names, or the nearest package above it (an attribute of that package)."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _targets(node: ast.Import | ast.ImportFrom, importer: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [_known(a.name) for a in node.names if a.name == FACE or a.name.startswith(f"{FACE}.")]
    if node.level:  # relative: from the importer's package, level - 1 packages up
        package = importer if MODULES[importer] else importer.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    if base != FACE and not base.startswith(f"{FACE}."):
        return []
    targets = []
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        if candidate in MODULES:
            targets.append(candidate)
        elif base == FACE and alias.name in pairless._API:
            targets.append(f"{FACE}.api")  # the face hands these out from pairless.api
        else:
            targets.append(_known(base))
    return targets


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _edges(name: str, text: str | None = None) -> list[Edge]:
    """The pairless imports of module ``name`` (its source file, or ``text`` read as if it were that file)."""
    tree = ast.parse(_source(name).read_text() if text is None else text, str(_source(name)))
    edges: list[Edge] = []

    def visit(node: ast.AST, runs: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            edges.extend(Edge(name, t, node.lineno, runs) for t in _targets(node, name) if t != name)
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            runs = False
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, runs)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, runs)

    visit(tree, True)
    return edges


EDGES = [edge for name in sorted(MODULES) for edge in _edges(name)]


def _qt_missing() -> bool:
    try:
        import napari  # noqa: F401
        import qtpy.QtWidgets  # noqa: F401
    except Exception:  # no napari, or qtpy without a Qt binding
        return True
    return not hasattr(napari, "__file__") or napari.__file__ is None  # tests/napari as a namespace package


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name, monkeypatch, capsys):
    if name.startswith(f"{FACE}.napari.") and _qt_missing():
        pytest.skip("napari or a Qt binding is not installed")
    importlib.import_module(name)


@pytest.mark.parametrize("argv, code", [(["--help"], 0), (["denoise", "nope", "x.tif", "--out", "o"], 2)])
def test_python_m_pairless_exits_with_the_commands_code(monkeypatch, capsys, argv, code):
    import runpy

    monkeypatch.setattr(sys, "argv", ["pairless", *argv])
    with pytest.raises(SystemExit) as stopped:
        runpy.run_module(FACE, run_name="__main__")
    assert stopped.value.code == code
    assert ("Usage" in capsys.readouterr().out) == (code == 0)


def test_imports_are_read_with_their_level_place_and_target():  # the reader itself, on made-up source
    text = (
        "from __future__ import annotations\n"
        "import numpy\n"
        "from typing import TYPE_CHECKING\n"
        "from . import files\n"  # 4: a sibling module, relative
        "from ..methods import registry as reg\n"  # 5: two levels up
        "from pairless.io import read_image\n"  # 6: a name of a package: the package
        "if TYPE_CHECKING:\n"
        "    from pairless.training.selfsup import Objective\n"  # 8: never runs
        "class A:\n"
        "    import pairless.nets.unet\n"  # 10: a class body runs on import
        "def f():\n"
        "    from pairless import fit, PairlessError\n"  # 12: the API from the face; the face
    )
    found = [(e.imported, e.line, e.runs_on_import) for e in _edges("pairless.io.tiff", text)]
    assert found == [
        ("pairless.io.files", 4, True),
        ("pairless.methods.registry", 5, True),
        ("pairless.io", 6, True),
        ("pairless.training.selfsup", 8, False),
        ("pairless.nets.unet", 10, True),
        ("pairless.api", 12, False),
        ("pairless", 12, False),
    ]


def test_every_module_has_a_layer():
    assert [name for name in MODULES if name != FACE and name.split(".")[1] not in LAYERS] == []


def test_no_module_imports_a_module_of_a_higher_layer():
    upward = [e for e in EDGES if e.importer != FACE and _layer(e.imported) > _layer(e.importer)]
    assert not upward, "imports of a higher layer (importer -> imported):\n" + "\n".join(map(str, upward))


def test_the_package_face_imports_errors_and_lazily_the_api_only():
    face = [e for e in EDGES if e.importer == FACE]
    wrong = [
        e
        for e in face
        if not (e.imported == f"{FACE}.errors" or (e.imported == f"{FACE}.api" and not e.runs_on_import))
    ]
    assert not wrong, "the package face imports:\n" + "\n".join(map(str, wrong))
    assert {e.imported for e in face} >= {f"{FACE}.errors", f"{FACE}.api"}  # else this test checks nothing


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_cycles_are_found():  # the detector itself, on a graph with one cycle
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_modules():
    on_import = [e for e in EDGES if e.runs_on_import]
    graph: dict[str, set[str]] = {}
    for e in on_import:
        graph.setdefault(e.importer, set()).add(e.imported)
    cycles = _cycles(graph)
    lines = []
    for component in cycles:
        members = set(component)
        lines.append("cycle: " + ", ".join(component))
        lines += [f"    {e}" for e in on_import if e.importer in members and e.imported in members]
    assert not cycles, "module-level import cycles:\n" + "\n".join(lines)
