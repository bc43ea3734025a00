"""The architecture as docs/architecture.md states it: its layer line orders the packages, every module is named in
it, a module imports (lazily or not) only from its own layer or earlier ones, and no modules import each other in
a circle. Imports under ``if TYPE_CHECKING:`` name types only and are not counted."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "medssl_core"
DOC = (ROOT / "docs" / "architecture.md").read_text()


def _layers() -> list[str]:
    """The layer line of the doc: ``common -> data -> ... -> cli``."""
    found = re.search(r"^(\w+(?: -> \w+)+)$", DOC, re.MULTILINE)
    assert found, "docs/architecture.md has no layer line such as 'common -> data -> ... -> cli'"
    return found.group(1).split(" -> ")


LAYERS = _layers()
RANK = {name: i for i, name in enumerate(LAYERS)}
MODULES = sorted(PACKAGE.rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _layer(module: str) -> str:
    """'medssl_core.data.sources' -> 'data'; 'medssl_core.cli' -> 'cli'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The medssl_core modules ``path`` imports, lazy ones included, TYPE_CHECKING ones not."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(block.test) for n in ast.walk(block)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "medssl_core":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                is_module = (ROOT / Path(*sub.split("."))).with_suffix(".py").is_file() or \
                    (ROOT / Path(*sub.split(".")) / "__init__.py").is_file()
                out.add(sub if is_module else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "medssl_core"}
    return out - {"medssl_core"}


def test_the_layer_line_names_every_package_and_top_module():
    tops = {p.name if p.is_dir() else p.stem for p in PACKAGE.iterdir()
            if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")}
    assert tops == set(LAYERS), f"packages not in the layer line: {tops - set(LAYERS)}; gone: {set(LAYERS) - tops}"


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_every_module_is_named_in_the_architecture_doc(path):
    if path.name == "__init__.py":
        return  # a package's init: the package is named by its modules
    assert f"`{_rel(path)}`" in DOC, f"docs/architecture.md does not name `{_rel(path)}`"


@pytest.mark.parametrize("path", [p for p in MODULES if p != PACKAGE / "__init__.py"], ids=_rel)
def test_no_module_imports_a_later_layer(path):
    own = _layer(_module_of(path))
    later = sorted(m for m in _imports(path) if RANK[_layer(m)] > RANK[own])
    assert not later, f"{_rel(path)} (layer {own!r}) imports {later}, of later layers ({' -> '.join(LAYERS)})"


def test_no_import_circles():
    graph = {_module_of(p): {m for m in _imports(p)} for p in MODULES}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            pytest.fail("modules import each other in a circle: " + " -> ".join([*path[path.index(module):], module]))
        if module in done:
            return
        for other in sorted(graph.get(module, ())):
            if not _is_parent(other, module):  # a module reading its own package's init
                visit(other, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def _is_parent(package: str, module: str) -> bool:
    return module.startswith(package + ".")


def test_the_paper_builds_no_model():
    shows_inputs = {"masks_show.py", "augment_show.py"}  # they draw a study's inputs: masks, augmented views
    paper = set().union(*(_imports(p) for p in (PACKAGE / "paper").glob("*.py") if p.name not in shows_inputs))
    assert not {m for m in paper if _layer(m) in {"models", "train", "evaluate", "augment", "methods"}}, paper
    tree = ast.parse((PACKAGE / "api.py").read_text())  # `medssl paper` and notebooks call it through the API
    paper_imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                     and n.module == "medssl_core.paper.generate"]
    assert [a.name for n in paper_imports for a in n.names] == ["generate"]
