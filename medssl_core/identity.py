"""What a run's numbers depend on beyond its settings: the code that computes them and the bytes it reads.

Code: a run's fingerprint maps the name of each definition that computes its numbers (a function, class or
constant: ``code_digest.Unit.key``) to a digest of its code (``code_digest``: from the token stream, the same on
every Python version, blind to comments, formatting, docstrings and error messages). Keyed by name, not by module,
so moving code between modules (the layout changing) leaves every recorded run current. Which definitions count:

- *shared* modules (``NUMERIC``): the loop of a run kind, whole, for every run of that kind (a metrics fix re-runs
  evaluations, not pretrainings);
- *optional* modules (``BY_SOURCE_KIND``, ``BY_SETTING``): whole, for the runs whose source or settings use them
  (a new study's reader or a Grad-CAM fix leaves other runs as they were);
- *by definition* (``BY_DEFINITION``): losses and methods, only the definitions a run reaches from its method's
  class and its other code (adding a method or a loss leaves every recorded run current; editing NT-Xent makes
  SimCLR's runs stale and VICReg's not). A method from another package counts the same way.

What a counted definition reads is followed into the modules that compute numbers (not into configuration, store or
paper code, whose effect on a run is in its spec), except the shared loop's conditional calls into an optional
module a run does not use. The project's own imports only name code and do not count; other packages' imports do.
A test checks that every module of the package is classified. Data: a version per dataset file set (the MD5 of each
file, cached by path, size, modification and change time).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path

from medssl_core.code_digest import FORMAT, CodeBase

PACKAGE = Path(__file__).resolve().parent

_SHARED = ("data/dataset.py", "data/sources.py", "data/splits.py", "data/split_schemes.py", "data/chest.py",
           "batch.py", "augment.py", "models.py", "cpu_conv.py", "features.py", "labels.py", "optim.py", "seeding.py",
           "device.py", "run_inputs.py", "runner.py")
NUMERIC: dict[str, tuple[str, ...]] = {
    "pretrain": (*_SHARED, "methods/base.py", "train.py", "run_pretrain.py"),
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
    ("evaluate", lambda hp: hp["protocol"].get("gradcam", 0) > 0, ("gradcam.py", "data/lung_mask.py")),
    ("evaluate", lambda hp: hp["protocol"].get("embedding", "none") != "none", ("embedding.py",)),
)
# Losses and methods: counted by the definitions a run reaches (from its method's class, or from the modules above).
BY_DEFINITION = ("losses.py", "methods/__init__.py", "methods/builtin.py", "methods/segmentation_guided.py")
# Modules whose changes cannot change a number already computed: their effect on a run, if any, is written
# into its spec (config, grid, study, registry, pipelines) or they only move, store or show results.
NOT_NUMERIC = ("__init__.py", "atomic.py", "augment_show.py", "bench.py", "cli.py", "config.py", "errors.py",
               "execute.py", "execute_ray.py", "masks_show.py", "run_context.py", "run_record.py", "tune.py",
               "grid.py", "identity.py", "paper.py", "paper_analysis.py", "paper_classes.py", "paper_output.py",
               "paper_report.py", "pipelines.py",
               "provenance.py", "runspec.py", "selection.py", "stale.py", "study.py",
               "torchvision_compat.py", "code_digest.py", "api.py", "plugins.py",
               "data/__init__.py", "data/download.py", "data/locate.py",
               "data/medmnist_info.py", "data/registry.py", "store/__init__.py", "store/labels.py", "store/records.py",
               "store/schema.py", "store/store.py")


FORMAT_KEY = "(format)"  # the fingerprint entry naming the digest's rules: records without it predate them
PACKAGE_NAME = "medssl_core"
LEGACY = ("recorded with the syntax-tree fingerprint of medssl before 0.2, which differed between Python versions: "
          "run it once more")


def module_name(path: str) -> str:
    """'data/sources.py' -> 'medssl_core.data.sources' (a dotted name stays as it is: another package's module)."""
    if not path.endswith(".py"):
        return path
    parts = path[:-3].split("/")
    return ".".join([PACKAGE_NAME, *(parts[:-1] if parts[-1] == "__init__" else parts)])


def module_key(module: str) -> str:
    """The fingerprint's name of a module: its path in the package, or its dotted name outside it."""
    if module != PACKAGE_NAME and not module.startswith(PACKAGE_NAME + "."):
        return module
    path = module.split(".")[1:]
    return "/".join(path) + ".py" if path and not _is_package(module) else "/".join([*path, "__init__.py"])


def _is_package(module: str) -> bool:
    return (PACKAGE.joinpath(*module.split(".")[1:]) / "__init__.py").is_file()


def _optional() -> set[str]:
    return {m for mods in (*BY_SOURCE_KIND.values(), *(mods for _, _, mods in BY_SETTING)) for m in mods}


@functools.cache
def _codebase() -> CodeBase:
    return CodeBase({PACKAGE_NAME})


def numeric_modules(kind: str, dataset_used: str, hparams: dict | None = None) -> tuple[str, ...]:
    """The modules counted whole for a run of ``kind`` reading the registered dataset ``dataset_used`` with the
    spec's ``hparams`` (as written in the spec; None: none of the optional parts)."""
    from medssl_core.data.registry import MERGE, REGISTRY

    kinds = sorted({REGISTRY[p].kind for p in dataset_used.split(MERGE) if p in REGISTRY})
    modules = NUMERIC[kind] + tuple(m for k in kinds for m in BY_SOURCE_KIND.get(k, ()))
    if hparams is not None:
        modules += tuple(m for k, uses, mods in BY_SETTING if k == kind and uses(hparams) for m in mods)
    return tuple(dict.fromkeys(modules))


def _method_class(hparams: dict | None) -> type | None:
    name = (hparams or {}).get("method", {}).get("name")
    if name is None:
        return None
    from medssl_core.methods import METHODS

    return METHODS.get(name)


def code_fingerprint(kind: str, dataset_used: str, hparams: dict | None = None,
                     codebase: CodeBase | None = None) -> dict[str, str]:
    """definition name -> digest of its code, for the definitions a run of ``kind`` uses (``codebase``: the
    installed code; several definitions of one name, in different modules, share one entry)."""
    method = _method_class(hparams) if kind == "pretrain" else None
    root = None if method is None else (method.__module__, method.__qualname__.split(".")[0])
    return dict(_fingerprint(kind, numeric_modules(kind, dataset_used, hparams), root, codebase or _codebase()))


@functools.lru_cache(maxsize=256)
def _fingerprint(kind: str, whole: tuple[str, ...], method: tuple[str, str] | None,
                 code: CodeBase) -> tuple[tuple[str, str], ...]:
    whole_names = {module_name(m) for m in whole}
    roots = [(m, i) for m in whole_names for i in range(len(code.units(m)))]
    if method is not None:
        if not code.followed(method[0]):  # a method from another package: that package is followed too
            code = code.with_package(method[0].split(".")[0])
        roots += code.unit_of(*method)
    optional, shared = _optional(), {module_name(m) for m in NUMERIC[kind]}
    # configuration, store and paper code: their effect on a run is in its spec; the other kind's loop (the runner
    # dispatches to both); an optional module called from the shared loop: only for the runs that use it
    cut = set(NOT_NUMERIC) | {m for other in NUMERIC.values() for m in other if m not in NUMERIC[kind]}

    def stop(source: str, target: str) -> bool:
        key = module_key(target)
        return key in cut or (key in optional and target not in whole_names and source in shared)

    digests: dict[str, set[str]] = {}
    for module, numbers in code.closure(roots, stop).items():
        for unit in (code.units(module)[i] for i in numbers):
            if not (unit.imports and code.followed(unit.imports[0][1])):  # the project's own imports only name
                digests.setdefault(unit.key, set()).add(unit.digest)
    return ((FORMAT_KEY, FORMAT), *((key, hashlib.sha256("|".join(sorted(found)).encode()).hexdigest()[:12])
                                    for key, found in sorted(digests.items())))


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def code_changes(recorded: dict[str, str], kind: str, dataset_used: str, hparams: dict | None = None) -> list[str]:
    """Definitions whose code differs between a recorded fingerprint and the current one ([LEGACY] for a
    fingerprint of the old format)."""
    if FORMAT_KEY not in recorded:
        return [LEGACY]
    return differing(recorded, code_fingerprint(kind, dataset_used, hparams))


def differing(a: dict[str, str], b: dict[str, str]) -> list[str]:
    """The definitions two fingerprints give different code (or only one of them has)."""
    return sorted(m for m in set(a) | set(b) if a.get(m) != b.get(m))
