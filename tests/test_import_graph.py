"""depthcli's own import graph has no cycle.

The graph is built from the source with ``ast`` (nothing is imported): an edge
``A -> B`` for every ``import``/``from ... import`` of a depthcli module ``B``
anywhere in ``A``, at module level, inside functions (lazy imports) and under
``if TYPE_CHECKING``. ``from pkg import name`` points at ``pkg.name`` when that
is a module, else at ``pkg``. A package's ``__init__`` running before its
submodules is not counted as an edge (it is how Python loads packages).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "depthcli"


def module_files(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package."""
    out = {}
    root = package_dir.parent
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The depthcli modules ``module`` imports anywhere in its source."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name
                while name and name not in modules:  # "import a.b.c" of a non-module tail
                    name = name.rpartition(".")[0]
                if name:
                    found.add(name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module if node.level == 0 else _resolve_relative(module, is_package, node.level, node.module)
            if not base or not base.split(".")[0] == "depthcli":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    found.add(sub)
                elif base in modules:
                    found.add(base)
    found.discard(module)
    return found


def import_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    modules = module_files(package_dir)
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {m: WHITE for m in graph}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        colour[m] = GREY
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if colour.get(n, BLACK) == GREY:
                return stack[stack.index(n) :] + [n]
            if colour.get(n) == WHITE:
                cycle = visit(n)
                if cycle:
                    return cycle
        stack.pop()
        colour[m] = BLACK
        return None

    for m in sorted(graph):
        if colour[m] == WHITE:
            cycle = visit(m)
            if cycle:
                return cycle
    return None


def test_depthcli_import_graph_has_no_cycle():
    graph = import_graph()
    assert "depthcli.convert" in graph and "depthcli.io.colmap" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_graph_sees_lazy_and_type_checking_imports():
    graph = import_graph()
    # convert() imports its family modules inside a function
    assert "depthcli.convert.colmap" in graph["depthcli.convert"]
    assert "depthcli.convert.rgbd" in graph["depthcli.convert"]
    # the command module imports the library lazily
    assert "depthcli.convert" in graph["depthcli.commands.convert"]


def test_layers_point_down():
    """io/ and the geometry/depth modules never import the conversion package or commands."""
    graph = import_graph()
    for module, deps in graph.items():
        if module.startswith("depthcli.io") or module in ("depthcli.geometry", "depthcli.depth"):
            upward = sorted(d for d in deps if d.startswith(("depthcli.convert", "depthcli.commands", "depthcli.cli")))
            assert not upward, f"{module} imports {upward}"


def _write_package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "depthcli"
    for rel, text in files.items():
        p = pkg / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return pkg


@pytest.mark.parametrize(
    "files",
    [
        # module level both ways
        {"__init__.py": "", "a.py": "import depthcli.b\n", "b.py": "from depthcli import a\n"},
        # a lazy import inside a function closes the loop
        {"__init__.py": "", "a.py": "def f():\n    from depthcli.b import g\n", "b.py": "from depthcli.a import f\n"},
        # TYPE_CHECKING-only import, relative form, through a sub-package
        {
            "__init__.py": "",
            "io/__init__.py": "",
            "io/x.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..c import Config\n",
            "c.py": "def run():\n    from depthcli.io import x\n",
        },
    ],
)
def test_cycle_detector_finds_planted_cycles(tmp_path, files):
    pkg = _write_package(tmp_path, files)
    cycle = find_cycle(import_graph(pkg))
    assert cycle is not None and cycle[0] == cycle[-1]


def test_cycle_detector_accepts_a_tree(tmp_path):
    pkg = _write_package(
        tmp_path,
        {"__init__.py": "", "a.py": "import depthcli.b\nfrom depthcli.c import x\n", "b.py": "from depthcli import c\n", "c.py": "x = 1\n"},
    )
    graph = import_graph(pkg)
    assert graph["depthcli.a"] == {"depthcli.b", "depthcli.c"}
    assert find_cycle(graph) is None


def test_every_source_family_is_wired():
    """Each SOURCE_FAMILIES entry has its module with KINDS, detect() and convert_source()."""
    import depthcli.convert as conv

    seen = []
    for family, kinds in conv.SOURCE_FAMILIES.items():
        module = conv._family_module(family)
        assert module.__name__ == f"depthcli.convert.{family}"
        assert tuple(module.KINDS) == kinds
        assert callable(module.detect) and callable(module.convert_source)
        seen += kinds
    assert len(seen) == len(set(seen)) and conv.SOURCE_KINDS == ("auto", *seen)
