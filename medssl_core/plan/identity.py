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

from medssl_core.common.code_digest import FORMAT, CodeBase

PACKAGE = Path(__file__).resolve().parent.parent  # medssl_core/

_SHARED = ("data/dataset.py", "data/loaded.py", "data/sources.py", "data/splits.py", "data/split_schemes.py",
           "data/chest.py", "data/batch.py", "data/labels.py", "augment/views.py", "models/backbones.py",
           "models/imagenet.py", "models/vit.py", "models/heads.py", "models/cpu_conv.py", "evaluate/features.py",
           "train/optim.py", "common/seeding.py", "common/device.py", "run/inputs.py", "run/runner.py")
NUMERIC: dict[str, tuple[str, ...]] = {
    "pretrain": (*_SHARED, "methods/base.py", "train/pretrain.py", "run/pretrain.py"),
    "evaluate": (*_SHARED, "train/finetune.py", "evaluate/knn.py", "evaluate/metrics.py", "run/evaluate.py"),
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
    ("pretrain", lambda hp: _arch(hp).startswith("sg_"), ("models/sg_encoders.py",)),
    ("evaluate", lambda hp: _arch(hp).startswith("sg_"), ("models/sg_encoders.py",)),
    ("evaluate", lambda hp: hp["protocol"].get("gradcam", 0) > 0, ("evaluate/gradcam.py", "data/lung_mask.py")),
    ("evaluate", lambda hp: hp["protocol"].get("embedding", "none") != "none", ("evaluate/embedding.py",)),
    ("pretrain", lambda hp: hp.get("train", {}).get("capture", "off") != "off", ("train/capture.py",)),
    *((kind, lambda hp: hp.get("backbone", {}).get("stand_in_weights", False), ("models/stand_in.py",))
      for kind in ("pretrain", "evaluate")),
)
# Losses and methods: counted by the definitions a run reaches (from its method's class, or from the modules above):
# every module of these packages.
BY_DEFINITION = ("losses/", "methods/")
# Modules whose changes cannot change a number already computed: their effect on a run, if any, is written
# into its spec (config, plan) or they only move, store or show results; the packages named by a trailing '/'.
NOT_NUMERIC = ("__init__.py", "api.py", "cli.py", "config/", "plan/", "execute/", "store/", "paper/",
               "common/__init__.py", "common/atomic.py", "common/errors.py", "common/provenance.py",
               "common/torchvision_compat.py", "common/code_digest.py",
               "augment/__init__.py", "evaluate/__init__.py", "models/__init__.py", "train/__init__.py",
               "train/bench.py", "models/weights_fetch.py", "run/__init__.py", "run/context.py", "run/record.py",
               "data/__init__.py", "data/download.py", "data/locate.py", "data/medmnist_info.py", "data/registry.py")


FORMAT_KEY = "(format)"  # the fingerprint entry naming the digest's rules: records without it predate them
PACKAGE_NAME = "medssl_core"
LEGACY = ("recorded with the syntax-tree fingerprint of medssl before 0.2, which differed between Python versions: "
          "run it once more")


def listed(key: str, entries) -> bool:
    """Whether a module's key is one of ``entries`` or lies in a package named there with a trailing '/'."""
    return key in entries or any(e.endswith("/") and key.startswith(e) for e in entries)


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
        return listed(key, cut) or (key in optional and target not in whole_names and source in shared)

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
