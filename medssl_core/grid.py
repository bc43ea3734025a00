"""Expand a Study and a profile into RunSpecs. Pretraining runs are shared by every evaluation that uses them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from medssl_core.data import get_dataset, is_available
from medssl_core.data.dataset import missing_message
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
            raise ValueError(f"unknown variant {v!r}")
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
           data_dir=None, allow_download: bool = True, overrides: dict | None = None) -> Plan:
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
            raise ValueError(f"{study.name} has no dataset {sorted(unknown)}; it uses "
                             f"{[d.key for d in study.datasets]}")
    extra = overrides or {}
    seen: set[str] = set()

    def add(spec: RunSpec) -> None:
        if spec.run_id not in seen:
            seen.add(spec.run_id)
            plan.specs.append(spec)

    for ds in wanted_ds:
        source = resolve_source(ds, profile.image_size, data_dir, allow_download)
        if source is None:
            why = " | ".join(missing_message(get_dataset(s), data_dir, profile.image_size.get(s)) for s in ds.sources)
            plan.skipped.append((f"dataset {ds.key}", why))
            continue
        info = get_dataset(source)
        official = ds.split["scheme"] == "official" or (info.official_splits and info.kind == "medmnist")
        split = {"scheme": "official"} if official else dict(ds.split)
        if info.lateral_classes:  # left/right organ classes: a horizontal flip would change the label
            ds = replace(ds, hparams=deep_merge(ds.hparams, {"augment": {"hflip": 0.0}}))
        common = deep_merge(ds.hparams, {"image_size": profile.image_size[source], "split": split,
                                         "channels": info.channels, "n_classes": info.n_classes, "task": info.task})
        for method_name in method_names:
            method = study.method(method_name)
            arch = deep_merge(study.pretrain_defaults, profile.overrides.get("pretrain", {}))["backbone"]["arch"]
            if method.init == "imagenet" and imagenet_weights_path(arch) is None:
                plan.skipped.append((f"{ds.key}/{method.name}", imagenet_missing_message(arch)))
                continue
            for seed in seeds:
                for choice in variants(study, profile.variants):
                    parent = None
                    pre_decisions = {d.name: choice[d.name] for d in study.decisions
                                     if (d.stage == "data" or (d.stage == "pretrain" and method.pretrain is not None))
                                     and d.applies(method.name, None, official)}
                    base = deep_merge(deep_merge(study.pretrain_defaults, profile.overrides.get("pretrain", {})),
                                      common)
                    base["backbone"] = {**base["backbone"], "init": method.init}
                    if method.pretrain is not None:
                        per_method = profile.overrides.get("methods", {}).get(method.name, {})
                        method_hp = deep_merge(method.pretrain, per_method)
                        hp = deep_merge(base, {"method": method_hp})
                        hp = deep_merge(hp, profile.overrides.get("pretrain", {}))
                        hp = deep_merge(hp, extra.get("pretrain", {}))
                        for d in study.decisions:
                            if d.name in pre_decisions:
                                set_path(hp, d.param, d.value(pre_decisions[d.name]))
                        pre = RunSpec(study.name, "pretrain", ds.key, source, method.name, seed, profile.name,
                                      hp, pre_decisions)
                        add(pre)
                        parent = pre.run_id
                    for protocol_name in protocol_names:
                        protocol = study.protocol(protocol_name)
                        if protocol.methods is not None and method.name not in protocol.methods:
                            continue
                        decisions = dict(pre_decisions)
                        decisions.update({d.name: choice[d.name] for d in study.decisions if d.stage == "evaluate"
                                          and d.applies(method.name, protocol.name, official)})
                        hp = deep_merge(study.evaluate_defaults, {
                            **common, "backbone": base["backbone"],
                            "augment": {k: base["augment"][k] for k in ("mean", "std")},
                            "amp": base.get("amp", "auto"), "deterministic": base.get("deterministic", False),
                            "protocol": protocol.hparams})
                        hp = deep_merge(hp, profile.overrides.get("evaluate", {}))
                        hp = deep_merge(hp, profile.overrides.get("protocols", {}).get(protocol.name, {}))
                        hp = deep_merge(hp, extra.get("evaluate", {}))
                        for d in study.decisions:
                            if d.stage in ("data", "evaluate") and d.name in decisions:
                                set_path(hp, d.param, d.value(decisions[d.name]))
                        for fraction in profile.fractions:
                            add(RunSpec(study.name, "evaluate", ds.key, source, method.name, seed, profile.name,
                                        hp, decisions, protocol.name, fraction, parent))
    return plan
