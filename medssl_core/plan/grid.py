"""Expand a Study and a profile into RunSpecs: validated, strict, with the code and data fingerprints that
make them runs. Pretraining runs are shared by every evaluation that uses them."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from medssl_core import config
from medssl_core.common.device import use_bf16
from medssl_core.common.errors import ConfigError
from medssl_core.data import get_dataset, is_available
from medssl_core.data.dataset import data_version, missing_message
from medssl_core.models.imagenet import imagenet_missing_message, imagenet_weights_path
from medssl_core.plan.identity import code_fingerprint
from medssl_core.plan.runspec import RunSpec
from medssl_core.plan.study import (
    AS_PUBLISHED,
    CORRECTED,
    EACH,
    Decision,
    Profile,
    Study,
    StudyDataset,
    deep_merge,
)


@dataclass
class Plan:
    study: str
    profile: str
    specs: list[RunSpec] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (what, why and how to fix)
    stand_ins: dict[str, str] = field(default_factory=dict)  # study dataset -> the registry dataset used instead
    weights: set[tuple[str, str]] = field(default_factory=set)  # (arch, init) of the ImageNet weights runs start from
    stand_in_weights: set[tuple[str, str]] = field(default_factory=set)  # of those, the ones a stand-in replaces
    metric: str = "accuracy"  # the study's headline metric (progress lines name it)

    @property
    def pretrain(self) -> list[RunSpec]:
        return [s for s in self.specs if s.kind == "pretrain"]

    @property
    def evaluate(self) -> list[RunSpec]:
        return [s for s in self.specs if s.kind == "evaluate"]


def variants(study: Study, wanted: tuple[str, ...]) -> list[tuple[str, dict[str, str]]]:
    """(variant name, decision -> value) for each variant asked; 'each' gives one per decision."""
    names = [d.name for d in study.decisions]
    out = []
    for v in wanted:
        if v in (AS_PUBLISHED, CORRECTED):
            out.append((v, dict.fromkeys(names, v)))
        elif v == EACH:
            out += [(v, {n: (CORRECTED if n == flip else AS_PUBLISHED) for n in names}) for flip in names]
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
            info = get_dataset(name)
            parts = info.layout["parts"] if info.kind == "merged" else (name,)
            if all(get_dataset(p).kind == "medmnist" for p in parts) and name in image_size:
                return name
    return None


def check_decisions(study: Study) -> None:
    """Every decision must name a real field of the configuration of the stage it applies to."""
    for d in study.decisions:
        models = {"pretrain": (config.PretrainHP,), "evaluate": (config.EvaluateHP,),
                  "data": (config.PretrainHP, config.EvaluateHP)}[d.stage]
        for model in models:
            for param in d.params:
                config.check_path(model, param, f"{study.name} decision {d.name!r}")


# the sections of overrides (a profile's, or the caller's: `medssl tune`'s); each method's own say the same per stage
OVERRIDE_KEYS = ("pretrain", "evaluate", "protocols", "methods")
METHOD_OVERRIDE_KEYS = ("pretrain", "evaluate", "protocols")


def check_overrides(study: Study, overrides: dict, where: str, sections=OVERRIDE_KEYS) -> None:
    """Overrides may only hold known sections, each naming the study's own protocols and methods: {'pretrain',
    'evaluate', 'protocols': {protocol: ...}, 'methods': {method: {'pretrain', 'evaluate', 'protocols'}}}."""
    protocols, methods = [p.name for p in study.protocols], [m.name for m in study.methods]
    unknown = [k for k in overrides if k not in sections]
    unknown += [f"protocols.{p}" for p in overrides.get("protocols", {}) if p not in protocols]
    for name, scoped in overrides.get("methods", {}).items():
        if name not in methods:
            unknown.append(f"methods.{name}")
            continue
        unknown += [f"methods.{name}.{k}" for k in scoped if k not in METHOD_OVERRIDE_KEYS]
        unknown += [f"methods.{name}.protocols.{p}" for p in scoped.get("protocols", {}) if p not in protocols]
    if unknown:
        raise ConfigError(f"{where}: unknown {sorted(unknown)}; valid sections: {', '.join(sections)}, where "
                          f"'methods' names the study's methods ({', '.join(methods)}), each with "
                          f"{', '.join(METHOD_OVERRIDE_KEYS)}, and 'protocols' its protocols ({', '.join(protocols)})")


def expand(study: Study, profile_name: str, *, seeds=None, datasets=None, methods=None, protocols=None,
           variant_names=None, data_dir=None, allow_download: bool = True, overrides: dict | None = None,
           device: torch.device | None = None, every_source: bool = False, fingerprint_data: bool = True,
           stand_in_weights: bool = False) -> Plan:
    """The runs a study asks for under a profile.

    ``datasets``: the evaluated datasets to plan (their pretraining datasets are planned with them).
    ``every_source``: plan each dataset with every source it may use (stand-ins too) whether present or not,
    and ``fingerprint_data=False`` leaves the data version out: what `medssl paper` needs to recognise the
    runs of the study as declared now without the data at hand.
    ``overrides``: {'pretrain': ..., 'evaluate': ...} merged into every run, and {'methods': {name: {'pretrain':
    ..., 'evaluate': ..., 'protocols': {protocol: ...}}}} into one method's runs only (`medssl tune`'s values),
    after the profile's own overrides, which have the same form.
    ``stand_in_weights``: runs whose ImageNet weights are missing start from medssl's labelled stand-in
    (`models/stand_in.py`; their settings say ``backbone.stand_in_weights``) instead of being skipped; not for the
    'paper' profile.
    """
    check_decisions(study)
    extra = overrides or {}
    check_overrides(study, extra, "overrides", ("pretrain", "evaluate", "methods"))
    profile = study.profile(profile_name)
    check_overrides(study, profile.overrides, f"{study.name} profile {profile.name!r} overrides")
    if stand_in_weights and profile.name == "paper":
        raise ConfigError(f"{study.name}: stand-in weights are random, not ImageNet's: the 'paper' profile runs the "
                          f"study's own settings only with the real weights (`medssl weights fetch {study.name} "
                          "--profile paper` on a machine with internet). Drop --stand-in-weights, or use a cheap "
                          "profile (quick, tiny).")
    plan = Plan(study.name, profile.name, metric=study.main_metric)
    seeds = tuple(seeds) if seeds is not None else None  # None: the profile's, per variant
    method_names = methods or profile.methods or study.default_methods
    protocol_names = protocols or profile.protocols or tuple(p.name for p in study.protocols)
    for name in method_names:
        study.method(name)  # validates
    for name in protocol_names:
        study.protocol(name)
    evaluated = [d for d in study.datasets if d.evaluated]
    datasets = datasets if datasets is not None else profile.datasets
    if datasets is not None:
        unknown = set(datasets) - {d.key for d in evaluated}
        if unknown:
            raise ConfigError(f"{study.name} evaluates no dataset {sorted(unknown)}; it evaluates "
                              f"{[d.key for d in evaluated]}")
        evaluated = [d for d in evaluated if d.key in datasets]
    needed = {d.key for d in evaluated} | {key for d in evaluated for key in d.pretrainings()}
    bf16 = use_bf16(device or torch.device("cpu"), "auto")
    targets: dict[str, list[_Target]] = {}
    for ds in study.datasets:
        if ds.key not in needed:
            continue
        if every_source:
            sources = [s for s in ds.sources if s in profile.image_size]
        else:
            read_size = {**profile.image_size, **profile.source_size}  # the side the files are read at
            source = resolve_source(ds, read_size, data_dir, allow_download)
            if source is None:
                why = " | ".join(missing_message(get_dataset(s), data_dir, read_size.get(s)) for s in ds.sources)
                plan.skipped.append((f"dataset {ds.key}", why))
                continue
            sources = [source]
            if source != ds.sources[0]:
                plan.stand_ins[ds.key] = source
        targets[ds.key] = [_target(study, profile, ds, source, bf16, data_dir, allow_download, fingerprint_data)
                           for source in sources]
    chosen = variants(study, tuple(variant_names or profile.variants))
    runs = [(seed, choice) for variant, choice in chosen for seed in (seeds or profile.seeds_of(variant))]
    runs.sort(key=lambda run: run[0])  # seed-major: a cut-off grid has whole seeds
    seen: set[str] = set()
    for ds in evaluated:
        for target in targets.get(ds.key, []):
            for pre_key in ds.pretrainings():
                pre_targets = [target] if pre_key == ds.key else targets.get(pre_key, [])
                names = method_names
                if not pre_targets:
                    plan.skipped.append((f"dataset {ds.key} pretrained on {pre_key}",
                                         f"the data of {pre_key} is missing (see above)"))
                    # what needs no pretraining still runs (deduplicated against the other pairings)
                    pre_targets, names = [target], [m for m in method_names if study.method(m).pretrain is None]
                for pre_target in pre_targets:
                    pair_names = names
                    if (target.source == ds.sources[0]) != (pre_target.source == pre_target.ds.sources[0]):
                        plan.skipped.append((f"dataset {ds.key} pretrained on {pre_key}", (
                            f"{ds.key} reads {target.source} but {pre_key} reads {pre_target.source}: an encoder "
                            "pretrained on a stand-in is not evaluated on the study's own data, nor the reverse; "
                            "provide both datasets, or neither")))
                        pair_names = [m for m in names if study.method(m).pretrain is None]
                    _expand_pair(plan, seen, study, profile, target, pre_target, pair_names, protocol_names,
                                 runs, overrides or {}, data_dir, fingerprint_data, stand_in_weights)
    return plan


@dataclass
class _Target:
    """A study dataset read from one source: the settings every run on it shares."""
    ds: StudyDataset
    source: str
    base: dict  # pretraining defaults + profile + dataset settings
    official: bool
    data: str | None  # data version


def _target(study: Study, profile: Profile, ds: StudyDataset, source: str, bf16: bool, data_dir,
            allow_download: bool, fingerprint_data: bool) -> _Target:
    info = get_dataset(source)
    size = profile.image_size[source]
    source_size = profile.source_size.get(source)
    data = None
    if fingerprint_data:
        data = data_version(source, source_size or size, data_dir, allow_download=allow_download)
    split = ds.source_split.get(source)
    if split is None:
        official = ds.split["scheme"] == "official" or (info.official_splits and info.kind == "medmnist")
        split = {"scheme": "official"} if official else ds.split
    official = split["scheme"] == "official"
    common = deep_merge(ds.hparams, {
        "image_size": size, "source_size": source_size, "split": split,
        "channels": info.channels, "n_classes": info.n_classes, "task": info.task})
    order = ds.label_order(source, info.classes)
    if order is not None:
        common["label_order"] = list(order)
    if info.lateral_classes:  # left/right organ classes: a horizontal flip would change the label
        common = deep_merge(common, {"augment": {"hflip": 0.0}})
    # the profile last: it may resize a dataset's split too (a smaller sample for a CPU)
    base = deep_merge(deep_merge(study.pretrain_defaults, common), profile.overrides.get("pretrain", {}))
    if base.get("amp", "auto") == "auto":
        base["amp"] = "bf16" if bf16 else "off"
    return _Target(ds, source, base, official, data)


def _expand_pair(plan, seen, study: Study, profile: Profile, target: _Target, pre_target: _Target, method_names,
                 protocol_names, runs, extra: dict, data_dir=None, fingerprint_data: bool = True,
                 stand_in_weights: bool = False) -> None:
    """Runs evaluated on ``target`` whose encoders were pretrained on ``pre_target`` (the same one in-domain)."""
    for method_name in method_names:
        method = study.method(method_name)
        if method.pretrain is None and pre_target is not target and target.ds.key in target.ds.pretrainings():
            continue  # nothing pretrained: one pairing has its runs (the in-domain one; else any, deduplicated)
        if target.ds.methods is not None and method_name not in target.ds.methods:
            continue
        init = deep_merge({"backbone": {"init": method.init}}, method.hparams)
        # the profile's pretraining overrides last: a CPU profile shrinks a method's own settings too
        again = profile.overrides.get("pretrain", {})
        base, pre_base = (deep_merge(deep_merge(t.base, init), again) for t in (target, pre_target))
        arch = base["backbone"]["arch"]
        if method.init != "random":
            plan.weights.add((arch, method.init))
            missing = imagenet_weights_path(arch, method.init) is None
            if missing and stand_in_weights:  # a setting: never the id of a run with the real weights
                plan.stand_in_weights.add((arch, method.init))
                base, pre_base = (deep_merge(b, {"backbone": {"stand_in_weights": True}}) for b in (base, pre_base))
            # weights, like data, are needed to run, not to recognise runs (fingerprint_data False: `medssl paper`)
            elif missing and fingerprint_data:
                plan.skipped.append((f"{target.ds.key}/{method.name}", imagenet_missing_message(arch, method.init)
                                     + " (or, in a cheap profile, --stand-in-weights: a labelled random stand-in)"))
                continue
        for t, merged in ((target, base), (pre_target, pre_base)):
            read = t.base.get("source_size") or t.base["image_size"]
            if (merged.get("source_size") or merged["image_size"]) != read:
                raise ConfigError(f"{study.name} method {method.name!r}: its hparams change the size of the files "
                                  f"read from {t.source} ({read} px): a method may resize its input (image_size, "
                                  "with source_size set to the file's size) but not read other files.")
        more = pre_base.get("extra_images") if method.pretrain is not None else None
        more_data = None  # the version of the extra images a pretraining reads besides its own dataset
        if more:
            side = pre_base.get("source_size") or pre_base["image_size"]
            if fingerprint_data and not is_available(more["dataset"], side, data_dir):  # (paper: data not needed)
                plan.skipped.append((f"{target.ds.key}/{method.name}", "its pretraining adds the images of "
                                     f"{more['dataset']}: " + missing_message(get_dataset(more["dataset"]), data_dir,
                                                                              side)))
                continue
            more_data = data_version(more["dataset"], side, data_dir) if fingerprint_data else None
        builder = _Builder(study, profile, target, method, extra, more_data)
        pre_builder = builder if pre_target is target else _Builder(study, profile, pre_target, method, extra,
                                                                    more_data)
        for seed, choice in runs:
            pre = pre_builder.pretrain(pre_base, seed, choice)
            if pre is not None and pre.run_id not in seen:
                seen.add(pre.run_id)
                plan.specs.append(pre)
            for protocol_name in protocol_names:
                protocol = study.protocol(protocol_name)
                pretrained_on = pre_target.ds.key if method.pretrain is not None else None
                if (protocol.methods is None or method.name in protocol.methods) and protocol.runs_on(
                        target.ds.key, pretrained_on):
                    for spec in builder.evaluate(base, protocol, pre, seed, choice):
                        if spec.run_id not in seen:
                            seen.add(spec.run_id)
                            plan.specs.append(spec)


@dataclass
class _Builder:
    study: Study
    profile: Profile
    target: _Target
    method: object
    extra: dict
    more_data: str | None = None  # the data version of a pretraining's extra_images

    def _applies(self, d: Decision, protocol: str | None) -> bool:
        return d.name not in self.profile.moot_decisions and d.applies(
            self.method.name, protocol, self.target.official, self.target.ds.key)

    def _decisions(self, choice: dict, protocol=None) -> dict[str, str]:
        out = {d.name: choice[d.name] for d in self.study.decisions
               if (d.stage == "data" or (d.stage == "pretrain" and self.method.pretrain is not None))
               and self._applies(d, None)}
        if protocol is not None:
            out.update({d.name: choice[d.name] for d in self.study.decisions
                        if d.stage == "evaluate" and self._applies(d, protocol)})
        return out

    def _where(self, what: str) -> str:
        return f"{self.study.name} [{self.profile.name}] {what} of {self.method.name} on {self.target.ds.key}"

    def _finish(self, model, hp: dict, decisions: dict[str, str], stages: tuple[str, ...], where: str) -> dict:
        hp = config.validate(model, hp, where)
        for d in self.study.decisions:
            if d.name in decisions and d.stage in stages:
                for param, value in d.settings(decisions[d.name]):
                    config.set_path(hp, param, value, f"{where}, decision {d.name!r}")
                hp = config.validate(model, hp, where)  # the defaults of a part the decision replaced whole
        return config.validate(model, hp, where, for_spec=True)

    def _own(self, overrides: dict) -> dict:
        """The section of ``overrides`` for this method's runs only: {'pretrain', 'evaluate', 'protocols'}."""
        return overrides.get("methods", {}).get(self.method.name, {})

    def pretrain(self, base: dict, seed: int, choice: dict) -> RunSpec | None:
        if self.method.pretrain is None:
            return None
        decisions = self._decisions(choice)
        hp = deep_merge(base, {"method": config.with_method_defaults(self.method.pretrain)})
        # the profile's own for this method, then the caller's (the profile's general ones are in base)
        for update in (self._own(self.profile.overrides).get("pretrain", {}), self.extra.get("pretrain", {}),
                       self._own(self.extra).get("pretrain", {})):
            hp = deep_merge(hp, update)
        hp["split"] = {**hp["split"], "script": self.study.pretrain_script}
        hp = self._finish(config.PretrainHP, hp, decisions, ("data", "pretrain"), self._where("pretraining"))
        data = self.target.data
        if hp.get("extra_images") and data is not None and self.more_data is not None:
            data = f"{data}+{self.more_data}"  # both datasets' bytes: either changing makes the run stale
        return RunSpec(self.study.name, "pretrain", self.target.ds.key, self.target.source, self.method.name, seed,
                       self.profile.name, hp, decisions, code=code_fingerprint("pretrain", self.target.source, hp),
                       data=data)

    def evaluate(self, base: dict, protocol, pre: RunSpec | None, seed: int, choice: dict) -> list[RunSpec]:
        """The protocol's runs, one per label fraction, preceded by any evaluation they start from."""
        decisions = self._decisions(choice, protocol.name)
        shared = ("image_size", "source_size", "split", "channels", "channel_mode", "label_order", "n_classes",
                  "task", "backbone", "amp", "deterministic", "masks", "mask_channel", "crop_to_lungs")
        declared = deep_merge(self.study.evaluate_defaults, {
            **{k: base[k] for k in shared if k in base},
            "augment": {k: base["augment"][k] for k in ("mean", "std", "resize_mode") if k in base["augment"]},
            "protocol": protocol.hparams})
        declared = deep_merge(declared, protocol.per_method.get(self.method.name, {}))
        where = self._where(f"evaluation {protocol.name!r}")
        fractions = protocol.fractions or self.target.ds.fractions or self.profile.fractions
        # an evaluation records every decision behind its numbers: its pretraining's too, including those that
        # concern only the pretraining's dataset (e.g. how merged sources are split)
        recorded = decisions if pre is None else {**pre.decisions, **decisions}
        specs: list[RunSpec] = []
        for fraction in fractions:
            hp = deep_merge(declared, protocol.per_fraction.get(fraction, {}))
            for overrides in (self.profile.overrides, self.extra):  # the profile's, then the caller's
                own = self._own(overrides)
                for update in (overrides.get("evaluate", {}), overrides.get("protocols", {}).get(protocol.name, {}),
                               own.get("evaluate", {}), own.get("protocols", {}).get(protocol.name, {})):
                    hp = deep_merge(hp, update)
            hp["split"] = {**hp["split"], "script": protocol.script or protocol.name}
            hp = self._finish(config.EvaluateHP, hp, decisions, ("data", "evaluate"), where)
            if pre is not None:
                check_transferable(pre, hp, where)
                check_label_use(pre, hp, fractions, where)
            start = None
            if hp.get("start_from") is not None:
                start = self._start(base, protocol.name, hp["start_from"], pre, seed, choice, where)
                specs.append(start)
            specs.append(RunSpec(self.study.name, "evaluate", self.target.ds.key, self.target.source,
                                 self.method.name, seed, self.profile.name, hp, recorded, protocol.name, fraction,
                                 pre, code=code_fingerprint("evaluate", self.target.source, hp),
                                 data=self.target.data,
                                 start=start))
        return specs

    def _start(self, base: dict, name: str, start_from: str, pre, seed: int, choice: dict, where: str) -> RunSpec:
        """The run of protocol ``start_from`` (same method, data and seed, all its labels) whose fine-tuned
        model an evaluation starts from."""
        upstream = self.study.protocol(start_from)
        if start_from == name or (upstream.methods is not None and self.method.name not in upstream.methods):
            raise ConfigError(f"{where}: start_from {start_from!r} must name another protocol that runs "
                              f"{self.method.name}")
        runs = [s for s in self.evaluate(base, upstream, pre, seed, choice) if s.protocol == start_from]
        whole = [s for s in runs if s.fraction == 1.0]
        if not whole or whole[0].start is not None:
            raise ConfigError(f"{where}: start_from {start_from!r} needs that protocol to run at fraction 1.0 and "
                              "to start from the pretrained encoder itself")
        if not whole[0].hparams["protocol"].get("fit", {}).get("save_weights"):
            raise ConfigError(f"{where}: start_from {start_from!r} reads that protocol's fine-tuned model: declare "
                              "its fit.save_weights true")
        return whole[0]


def check_transferable(pre: RunSpec, hp: dict, where: str) -> None:
    """An encoder loads into the evaluation's backbone only if both are the same network on as many channels."""
    pre_hp = pre.hparams
    differences = [f"{key}: {pre_hp['backbone'][key]!r} vs {hp['backbone'][key]!r}"
                   for key in ("arch", "small_stem") if pre_hp["backbone"][key] != hp["backbone"][key]]
    channels = [config.input_channels(h) for h in (pre_hp, hp)]
    if channels[0] != channels[1]:
        differences.append(f"input channels: {channels[0]} vs {channels[1]}")
    if differences:
        raise ConfigError(f"{where}: the encoder pretrained on {pre.dataset} does not fit this evaluation's "
                          f"backbone ({'; '.join(differences)}); declare the same backbone and channel_mode "
                          "for both datasets.")


def check_label_use(pre: RunSpec, hp: dict, fractions, where: str) -> None:
    """The 'best' encoder is chosen by the pretraining's kNN monitor, which reads the training split's labels:
    an evaluation with fewer labels than that must not use it."""
    if hp["checkpoint"] == "best" and pre.hparams["train"]["monitor_every"] and min(fractions) < 1.0:
        raise ConfigError(f"{where}: checkpoint 'best' is selected by the pretraining's kNN monitor with every "
                          f"training label, which an evaluation with {min(fractions):g} of the labels may not use. "
                          "Set the protocol's (or evaluate_defaults') checkpoint to 'last', or the pretraining's "
                          "train.monitor_every to 0.")
