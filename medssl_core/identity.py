"""What a run's numbers depend on beyond its settings: the code that computes them and the bytes it reads.

Code: each module that computes numbers is hashed by its syntax tree with docstrings and error messages
removed, so comments, formatting, docstrings and messages never change a run's identity, while any change to
a loss, an augmentation op, a split or a training loop does. Which modules count is declared here per run
kind (a metrics fix re-runs evaluations, not pretrainings), a reader of one source's layout counts only for
the runs that read that source (a new study's reader leaves other studies' runs as they were), and a test
checks that every module of the package is classified, so a new one cannot be forgotten. Data: a version per
dataset file set (the MD5 of each file, cached by size and modification time).
"""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Callable
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent

_SHARED = ("data/dataset.py", "data/sources.py", "data/splits.py", "data/split_schemes.py", "data/chest.py",
           "batch.py", "augment.py", "models.py", "cpu_conv.py", "features.py", "labels.py", "optim.py", "seeding.py",
           "device.py", "run_inputs.py", "runner.py")
NUMERIC: dict[str, tuple[str, ...]] = {
    "pretrain": (*_SHARED, "losses.py", "methods/__init__.py", "methods/base.py", "methods/builtin.py", "train.py",
                 "run_pretrain.py"),
    "evaluate": (*_SHARED, "evaluate.py", "metrics.py", "run_evaluate.py"),
}
# Readers of one source layout (registry kind): they count for the runs that read such a source only.
BY_SOURCE_KIND: dict[str, tuple[str, ...]] = {"mimeta": ("data/medimeta.py",)}
def _arch(hp: dict) -> str:
    return hp.get("backbone", {}).get("arch", "")


# Modules that count only for the runs whose settings use them: (run kind, does a spec's hparams use them, modules)
BY_SETTING: tuple[tuple[str, Callable[[dict], bool], tuple[str, ...]], ...] = (
    *((kind, lambda hp, m=masks: hp.get("masks", "none") == m, (module, "data/mask_cache.py"))
      for kind in ("pretrain", "evaluate")
      for masks, module in (("lung_rule", "data/lung_mask.py"), ("pathology_rule", "data/pathology_mask.py"))),
    *((kind, lambda hp: hp.get("crop_to_lungs", False), ("data/lung_mask.py", "data/mask_cache.py"))
      for kind in ("pretrain", "evaluate")),
    ("pretrain", lambda hp: _arch(hp).startswith("sg_"), ("sg_encoders.py",)),
    ("evaluate", lambda hp: _arch(hp).startswith("sg_"), ("sg_encoders.py",)),
    ("pretrain", lambda hp: hp.get("method", {}).get("name") in ("sg_contrastive", "sg_attention", "anatomy_vit"),
     ("methods/segmentation_guided.py", "sg_encoders.py")),
    ("evaluate", lambda hp: hp["protocol"].get("gradcam", 0) > 0, ("gradcam.py", "data/lung_mask.py")),
    ("evaluate", lambda hp: hp["protocol"].get("embedding", "none") != "none", ("embedding.py",)),
)
# Modules whose changes cannot change a number already computed: their effect on a run, if any, is written
# into its spec (config, grid, study, registry, pipelines) or they only move, store or show results.
NOT_NUMERIC = ("__init__.py", "atomic.py", "augment_show.py", "bench.py", "cli.py", "config.py", "errors.py",
               "execute.py", "execute_ray.py", "masks_show.py", "run_context.py", "run_record.py", "tune.py",
               "grid.py", "identity.py", "paper.py", "paper_analysis.py", "paper_classes.py", "paper_output.py",
               "paper_report.py", "pipelines.py",
               "provenance.py", "runspec.py", "selection.py", "stale.py", "study.py",
               "torchvision_compat.py", "data/__init__.py", "data/download.py", "data/locate.py",
               "data/medmnist_info.py", "data/registry.py", "store/__init__.py", "store/labels.py", "store/records.py",
               "store/schema.py", "store/store.py")


class _Normalise(ast.NodeTransformer):
    """Drop docstrings and the messages of raised errors: neither changes a number."""

    def _strip_docstring(self, node):
        self.generic_visit(node)
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
        return node

    visit_Module = visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _strip_docstring

    def visit_Raise(self, node: ast.Raise):
        if isinstance(node.exc, ast.Call):
            node.exc.args, node.exc.keywords = [], []
        return node


def module_hash(source: str) -> str:
    tree = _Normalise().visit(ast.parse(source))
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()[:12]


@functools.cache
def _module_hash(name: str) -> str:
    return module_hash((PACKAGE / name).read_text())


def numeric_modules(kind: str, dataset_used: str, hparams: dict | None = None) -> tuple[str, ...]:
    """The modules that compute a run of ``kind`` reading the registered dataset ``dataset_used`` with the
    spec's ``hparams`` (as written in the spec; None: none of the optional parts)."""
    from medssl_core.data.registry import MERGE, REGISTRY

    kinds = sorted({REGISTRY[p].kind for p in dataset_used.split(MERGE) if p in REGISTRY})
    modules = NUMERIC[kind] + tuple(m for k in kinds for m in BY_SOURCE_KIND.get(k, ()))
    if hparams is not None:
        modules += tuple(m for k, uses, mods in BY_SETTING if k == kind and uses(hparams) for m in mods)
    return tuple(dict.fromkeys(modules))


def code_fingerprint(kind: str, dataset_used: str, hparams: dict | None = None) -> dict[str, str]:
    """module -> hash of its normalised syntax tree, for the modules that compute such a run."""
    return {name: _module_hash(name) for name in numeric_modules(kind, dataset_used, hparams)}


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def code_changes(recorded: dict[str, str], kind: str, dataset_used: str, hparams: dict | None = None) -> list[str]:
    """Modules whose code differs between a recorded fingerprint and the current one."""
    current = code_fingerprint(kind, dataset_used, hparams)
    return sorted(m for m in set(current) | set(recorded) if current.get(m) != recorded.get(m))
