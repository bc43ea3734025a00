"""Expand a Study and a profile into RunSpecs. Pretraining runs are shared by every evaluation that uses them."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from medssl_core.data import get_dataset, is_available
from medssl_core.data.dataset import missing_message
from medssl_core.errors import ConfigError
from medssl_core.models import imagenet_missing_message, imagenet_weights_path
from medssl_core.runspec import RunSpec
from medssl_core.study import AS_PUBLISHED, CORRECTED, Study, StudyDataset, deep_merge, set_path


@dataclass
class Plan:
    study: str
    profile: str
    specs: list[RunSpec] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (what, why and how to fix)

    @property
    def pretrain(self) -> list[RunSpec]:
        return [s for s in self.specs if s.kind == "pretrain"]

    @property
    def evaluate(self) -> list[RunSpec]:
        return [s for s in self.specs if s.kind == "evaluate"]


def variants(study: Study, wanted: tuple[str, ...]) -> list[dict[str, str]]:
    names = [d.name for d in study.decisions]
    out = []
    for v in wanted:
        if v in (AS_PUBLISHED, CORRECTED):
            out.append(dict.fromkeys(names, v))
        elif v == "each":
            out += [{n: (CORRECTED if n == flip else AS_PUBLISHED) for n in names} for flip in names]
        else:
            raise ConfigError(f"unknown variant {v!r}; use as_published, corrected or each")
    return out


def resolve_source(ds: StudyDataset, image_size: dict[str, int], data_dir, allow_download: bool):
    """The first source present locally; else the first MedMNIST source if downloads are allowed."""
    for name in ds.sources:
        if is_available(name, image_size.get(name), data_dir):
            return name
    if allow_download:
        for name in ds.sources:
            if get_dataset(name).kind == "medmnist" and name in image_size:
                return name
    return None


def expand(study: Study, profile_name: str, *, seeds=None, datasets=None, methods=None, protocols=None,
           variant_names=None, data_dir=None, allow_download: bool = True, overrides: dict | None = None) -> Plan:
    profile = study.profile(profile_name)
    plan = Plan(study.name, profile.name)
    seeds = tuple(seeds) if seeds is not None else profile.seeds
    method_names = methods or profile.methods or tuple(m.name for m in study.methods)
    protocol_names = protocols or profile.protocols or tuple(p.name for p in study.protocols)
    for name in method_names:
        study.method(name)  # validates
    for name in protocol_names:
        study.protocol(name)
    wanted_ds = [d for d in study.datasets if datasets is None or d.key in datasets]
    if datasets is not None:
        unknown = set(datasets) - {d.key for d in study.datasets}
        if unknown:
            raise ConfigError(f"{study.name} has no dataset {sorted(unknown)}; it uses "
                             f"{[d.key for d in study.datasets]}")
    extra = overrides or {}
    seen: set[str] = set()
    for ds in wanted_ds:
        source = resolve_source(ds, profile.image_size, data_dir, allow_download)
        if source is None:
            why = " | ".join(missing_message(get_dataset(s), data_dir, profile.image_size.get(s)) for s in ds.sources)
            plan.skipped.append((f"dataset {ds.key}", why))
            continue
        info = get_dataset(source)
        official = ds.split["scheme"] == "official" or (info.official_splits and info.kind == "medmnist")
        common = deep_merge(ds.hparams, {
            "image_size": profile.image_size[source], "split": {"scheme": "official"} if official else ds.split,
            "channels": info.channels, "n_classes": info.n_classes, "task": info.task})
        if info.lateral_classes:  # left/right organ classes: a horizontal flip would change the label
            common = deep_merge(common, {"augment": {"hflip": 0.0}})
        base = deep_merge(deep_merge(study.pretrain_defaults, profile.overrides.get("pretrain", {})), common)
        for method_name in method_names:
            method = study.method(method_name)
            if method.init == "imagenet" and imagenet_weights_path(base["backbone"]["arch"]) is None:
                plan.skipped.append((f"{ds.key}/{method.name}", imagenet_missing_message(base["backbone"]["arch"])))
                continue
            method_base = deep_merge(base, {"backbone": {"init": method.init}})
            for seed, choice in itertools.product(seeds, variants(study, variant_names or profile.variants)):
                context = (study, profile, ds.key, source, method, seed, choice, official, extra)
                pre = _pretrain_spec(method_base, *context)
                parent = None
                if pre is not None:
                    parent = pre.run_id
                    _add(plan, seen, pre)
                for protocol_name in protocol_names:
                    protocol = study.protocol(protocol_name)
                    if protocol.methods is None or method.name in protocol.methods:
                        for spec in _evaluate_specs(method_base, protocol, parent, *context):
                            _add(plan, seen, spec)
    return plan


def _add(plan: Plan, seen: set[str], spec: RunSpec) -> None:
    if spec.run_id not in seen:
        seen.add(spec.run_id)
        plan.specs.append(spec)


def _data_and_pretrain_decisions(study, method, choice, official) -> dict[str, str]:
    return {d.name: choice[d.name] for d in study.decisions
            if (d.stage == "data" or (d.stage == "pretrain" and method.pretrain is not None))
            and d.applies(method.name, None, official)}


def _pretrain_spec(base, study, profile, ds_key, source, method, seed, choice, official, extra) -> RunSpec | None:
    if method.pretrain is None:
        return None
    decisions = _data_and_pretrain_decisions(study, method, choice, official)
    method_hp = deep_merge(method.pretrain, profile.overrides.get("methods", {}).get(method.name, {}))
    hp = deep_merge(deep_merge(base, {"method": method_hp}), extra.get("pretrain", {}))
    for d in study.decisions:
        if d.name in decisions:
            set_path(hp, d.param, d.value(decisions[d.name]))
    return RunSpec(study.name, "pretrain", ds_key, source, method.name, seed, profile.name, hp, decisions)


def _evaluate_specs(base, protocol, parent, study, profile, ds_key, source, method, seed, choice, official,
                    extra) -> list[RunSpec]:
    decisions = _data_and_pretrain_decisions(study, method, choice, official)
    decisions.update({d.name: choice[d.name] for d in study.decisions
                      if d.stage == "evaluate" and d.applies(method.name, protocol.name, official)})
    shared = {k: base[k] for k in ("image_size", "split", "channels", "n_classes", "task", "backbone")}
    hp = deep_merge(study.evaluate_defaults, {
        **shared, "augment": {k: base["augment"][k] for k in ("mean", "std")}, "amp": base.get("amp", "auto"),
        "deterministic": base.get("deterministic", False), "protocol": protocol.hparams})
    for update in (profile.overrides.get("evaluate", {}), profile.overrides.get("protocols", {}).get(protocol.name, {}),
                   extra.get("evaluate", {})):
        hp = deep_merge(hp, update)
    for d in study.decisions:
        if d.stage in ("data", "evaluate") and d.name in decisions:
            set_path(hp, d.param, d.value(decisions[d.name]))
    return [RunSpec(study.name, "evaluate", ds_key, source, method.name, seed, profile.name, hp, decisions,
                    protocol.name, fraction, parent) for fraction in profile.fractions]
