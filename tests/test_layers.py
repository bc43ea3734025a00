"""Imports flow one way: data -> batch/augment -> models, losses, methods -> train, evaluate -> runner -> plan ->
store -> paper -> cli (docs/architecture.md). A module importing one of a later layer fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medssl_core"
LAYERS = [
    ("data", {"data"}),
    ("augment", {"batch", "augment"}),
    ("models", {"models", "sg_encoders", "cpu_conv", "losses", "methods"}),
    ("train", {"train", "optim", "features", "evaluate", "metrics", "gradcam", "embedding"}),
    ("runner", {"run_inputs", "run_context", "run_pretrain", "run_evaluate", "run_record", "runner"}),
    ("plan", {"grid", "execute", "execute_ray", "stale", "selection", "bench", "tune"}),
    ("paper", {"paper", "paper_classes", "paper_output", "paper_analysis", "paper_report", "augment_show",
               "masks_show"}),
    ("cli", {"cli"}),
]
RANK = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}


def _imports(path: Path) -> set[str]:
    """First component after medssl_core of every medssl_core import in the module (lazy ones included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("medssl_core"):
            parts = node.module.split(".")
            out.add(parts[1] if len(parts) > 1 else node.names[0].name)
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("medssl_core.")}
    return out


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_later_layer(path):
    rel = path.relative_to(PACKAGE)
    own = rel.parts[0] if len(rel.parts) > 1 else rel.stem
    if own not in RANK:
        return  # shared helpers (config, errors, study, runspec, identity, store, ...) are checked by their users
    later = sorted(m for m in _imports(path) if m in RANK and RANK[m] > RANK[own])
    assert not later, f"{rel} imports {later}, of a later layer than {own!r}"


def test_the_paper_builds_no_model():
    assert not _imports(PACKAGE / "paper.py") & {"models", "train", "evaluate", "features", "run_inputs",
                                                  "run_pretrain", "run_evaluate", "runner", "augment"}
    tree = ast.parse((PACKAGE / "api.py").read_text())  # `medssl paper` and notebooks call it through the API
    paper_imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "medssl_core.paper"]
    assert [a.name for n in paper_imports for a in n.names] == ["generate"]
