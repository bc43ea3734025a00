"""A study declared as data: datasets, methods, protocols, decisions, profiles and the numbers it reports."""

from __future__ import annotations

import copy
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any

from medssl_core.errors import ConfigError

AS_PUBLISHED, CORRECTED = "as_published", "corrected"


@dataclass(frozen=True)
class Decision:
    """A point where a study's paper and code disagree, or its code has a bug: each run records which value
    it used. ``param`` is the dotted path in the run's hyper-parameters that the decision sets."""

    name: str
    description: str
    param: str
    as_published: Any
    corrected: Any
    stage: str  # 'data' (splits: every run), 'pretrain' or 'evaluate'
    methods: tuple[str, ...] | None = None
    protocols: tuple[str, ...] | None = None
    only_derived_splits: bool = False  # moot where the dataset ships official splits

    def applies(self, method: str, protocol: str | None, official_splits: bool) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if self.stage == "evaluate" and (protocol is None or (self.protocols is not None
                                                               and protocol not in self.protocols)):
            return False
        return not (self.only_derived_splits and official_splits)

    def value(self, choice: str):
        return self.as_published if choice == AS_PUBLISHED else self.corrected


@dataclass(frozen=True)
class StudyDataset:
    key: str
    title: str
    sources: tuple[str, ...]  # registry names; the first one present is used (later ones are stand-ins)
    split: dict  # {'scheme': 'official'|'merge_val'|'holdout_val'|'stratified', 'val_fraction', ...}
    hparams: dict = field(default_factory=dict)  # merged into every run on it, e.g. its normalisation


@dataclass(frozen=True)
class Method:
    name: str
    title: str
    pretrain: dict | None  # {'loss', 'loss_kwargs', 'projector', 'projector_last_bn', 'predictor'}; None: none
    init: str = "random"  # backbone initialisation before any pretraining ('random' | 'imagenet')


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str
    hparams: dict  # {'kind': 'knn', ...} or {'kind': 'fit', 'head', 'train_backbone', 'fit': {...}}
    methods: tuple[str, ...] | None = None  # None: every method


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    seeds: tuple[int, ...]
    variants: tuple[str, ...]  # 'as_published', 'corrected', 'each' (one decision corrected at a time)
    image_size: dict[str, int]  # registry dataset -> image side
    # deep-merged into runs: {'pretrain', 'evaluate', 'protocols': {name: ...}, 'methods': {name: ...}}
    overrides: dict = field(default_factory=dict)
    fractions: tuple[float, ...] = (1.0,)
    methods: tuple[str, ...] | None = None
    protocols: tuple[str, ...] | None = None
    needs_gpu: bool = False  # bare `replicate` on a CPU machine does not start this profile


@dataclass(frozen=True)
class Reported:
    dataset: str
    method: str
    protocol: str
    metric: str
    value: float | None
    source: str
    fraction: float | None = 1.0
    note: str = ""


@dataclass
class Study:
    name: str
    title: str
    citation: str
    datasets: tuple[StudyDataset, ...]
    methods: tuple[Method, ...]
    protocols: tuple[Protocol, ...]
    decisions: tuple[Decision, ...]
    profiles: tuple[Profile, ...]
    pretrain_defaults: dict  # backbone, augment, train, amp ...
    evaluate_defaults: dict
    reported: tuple[Reported, ...] = ()
    claims: tuple[str, ...] = ()  # qualitative findings the paper states, with source
    main_metric: str = "accuracy"

    def profile(self, name: str) -> Profile:
        for p in self.profiles:
            if p.name == name:
                return p
        raise ConfigError(f"{self.name} has no profile {name!r}; choose from {[p.name for p in self.profiles]}.")

    def method(self, name: str) -> Method:
        return _pick(self.methods, name, f"{self.name} method")

    def protocol(self, name: str) -> Protocol:
        return _pick(self.protocols, name, f"{self.name} protocol")

    def reported_rows(self) -> list[dict]:
        return [{"dataset": r.dataset, "method": r.method, "protocol": r.protocol, "fraction": r.fraction,
                 "metric": r.metric, "value": r.value, "source": r.source, "note": r.note} for r in self.reported]


def _pick(items, name: str, what: str):
    for item in items:
        if item.name == name:
            return item
    raise ConfigError(f"Unknown {what} {name!r}; choose from {[i.name for i in items]}.")


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def set_path(d: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = copy.deepcopy(value)


def studies() -> dict[str, Study]:
    """Every study registered under the `replications` package (a module-level STUDY)."""
    import replications

    found = {}
    for info in pkgutil.iter_modules(replications.__path__):
        module = importlib.import_module(f"replications.{info.name}")
        study = getattr(module, "STUDY", None)
        if isinstance(study, Study):
            found[study.name] = study
    return found


def get_study(name: str) -> Study:
    known = studies()
    if name not in known:
        raise ConfigError(f"Unknown study {name!r}; registered studies: {sorted(known)}.")
    return known[name]
