"""A study declared as data: datasets, methods, protocols, decisions, profiles and the numbers it reports."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from medssl_core.common.errors import ConfigError, did_you_mean

AS_PUBLISHED, CORRECTED = "as_published", "corrected"
EACH = "each"  # the variants with one decision corrected, the others as published
ALL_VARIANTS = (AS_PUBLISHED, CORRECTED, EACH)
# a decision's value that leaves the setting as the study declares it (the code's own value, e.g. one that differs
# by protocol), where only the other side changes it
AS_DECLARED = "<as declared>"


@dataclass(frozen=True)
class Decision:
    """A point where a study's paper and code disagree, or its code has a bug: each run records which value
    it used. ``param`` is the dotted path in the run's hyper-parameters that the decision sets; a tuple of paths
    sets several together (one bug with several faces), ``as_published`` and ``corrected`` then holding one value
    per path. AS_DECLARED leaves a path as the study declares it."""

    name: str
    description: str
    param: str | tuple[str, ...]
    as_published: Any
    corrected: Any
    stage: str  # 'data' (splits: every run), 'pretrain' or 'evaluate'
    methods: tuple[str, ...] | None = None
    protocols: tuple[str, ...] | None = None
    only_derived_splits: bool = False  # moot where the dataset ships official splits
    datasets: tuple[str, ...] | None = None  # the study's datasets it concerns (e.g. the colour ones); None: all
    # what the two values are, (as_published, corrected), where 'as published' / 'corrected' would mislead (e.g.
    # the published numbers follow the paper, the committed code has a bug); shown wherever the sides are named
    labels: tuple[str, str] | None = None

    def applies(self, method: str, protocol: str | None, official_splits: bool, dataset: str | None = None) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if self.datasets is not None and dataset not in self.datasets:
            return False
        if self.stage == "evaluate" and (protocol is None or (self.protocols is not None
                                                               and protocol not in self.protocols)):
            return False
        return not (self.only_derived_splits and official_splits)

    def __post_init__(self):
        if not isinstance(self.param, str) and not all(
                isinstance(v, tuple) and len(v) == len(self.param) for v in (self.as_published, self.corrected)):
            raise ConfigError(f"decision {self.name!r} sets {len(self.param)} params {list(self.param)}: its "
                              "as_published and corrected values must be tuples of as many values")
        if self.labels is not None and (len(self.labels) != 2 or not all(self.labels)
                                        or self.labels[0] == self.labels[1]):
            raise ConfigError(f"decision {self.name!r}: labels name its two sides, (as_published, corrected): two "
                              f"different non-empty strings, got {self.labels!r}")

    @property
    def params(self) -> tuple[str, ...]:
        return (self.param,) if isinstance(self.param, str) else self.param

    def value(self, choice: str):
        return self.as_published if choice == AS_PUBLISHED else self.corrected

    def label(self, choice: str) -> str:
        """What the side ``choice`` is: its declared label, else 'as published' or 'corrected'."""
        if self.labels is not None:
            return self.labels[0 if choice == AS_PUBLISHED else 1]
        return "as published" if choice == AS_PUBLISHED else "corrected"

    def settings(self, choice: str) -> list[tuple[str, Any]]:
        """(dotted path, value) this decision sets under ``choice``; AS_DECLARED paths are left alone."""
        values = self.value(choice)
        values = (values,) if isinstance(self.param, str) else values
        return [(p, v) for p, v in zip(self.params, values, strict=True) if not _as_declared(v)]


@dataclass(frozen=True)
class StudyDataset:
    key: str
    title: str
    sources: tuple[str, ...]  # registry names; the first one present is used (later ones are stand-ins)
    split: dict  # a config.Split: {'scheme': one of data/split_schemes.py's registry, its fields...}
    hparams: dict = field(default_factory=dict)  # merged into every run on it, e.g. its normalisation
    # keys of the study's datasets whose pretrainings are evaluated on this one (an axis: its own key for
    # in-domain, another's for transfer); None: its own only
    pretrained_on: tuple[str, ...] | None = None
    evaluated: bool = True  # False: a pretraining set only (e.g. several sources merged)
    fractions: tuple[float, ...] | None = None  # label fractions evaluated on it; None: the profile's
    # the classes its results name, in this order; a source that orders (or names) them otherwise has its labels
    # renumbered by name (``class_names``: source -> {its name: the name here}). None: each source's own.
    classes: tuple[str, ...] | None = None
    class_names: dict[str, dict[str, str]] = field(default_factory=dict)
    methods: tuple[str, ...] | None = None  # the methods evaluated on it (a baseline only some datasets have)
    # a split of its own for one source (e.g. a stand-in sampled to the study's sizes from its official split);
    # without one, a MedMNIST stand-in keeps its official split
    source_split: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self):
        if self.fractions is not None and not all(0 < f <= 1 for f in self.fractions):
            raise ConfigError(f"dataset {self.key!r}: label fractions lie in (0, 1], got {list(self.fractions)}")
        for what, named in (("class_names", self.class_names), ("source_split", self.source_split)):
            unknown = sorted(set(named) - set(self.sources))
            if unknown:
                raise ConfigError(f"dataset {self.key!r}: {what} names {unknown}, which are not among its sources "
                                  f"{list(self.sources)}")

    def label_order(self, source: str, source_classes: tuple[str, ...]) -> tuple[int, ...] | None:
        """new = order[old] that renumbers ``source``'s classes into ``classes`` by name; None: already so."""
        if self.classes is None:
            return None
        names = [self.class_names.get(source, {}).get(c, c) for c in source_classes]
        if sorted(names) != sorted(self.classes):
            raise ConfigError(f"dataset {self.key!r}: the classes of {source} ({names}, after class_names) are not "
                              f"exactly its classes {list(self.classes)}: map each of {source}'s class names to "
                              "one of them in class_names.")
        order = tuple(self.classes.index(n) for n in names)
        return None if order == tuple(range(len(order))) else order

    def pretrainings(self) -> tuple[str, ...]:
        return self.pretrained_on if self.pretrained_on is not None else (self.key,)


@dataclass(frozen=True)
class Tunable:
    """A hyper-parameter the source leaves open, for `medssl tune`: a dotted path into a run's settings under
    'pretrain' or 'evaluate' (e.g. 'pretrain.train.optimizer.lr'), a range (``log``: sampled on a log scale) or
    ``choices``, the methods it concerns (None: every method) and why it is open."""

    path: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None
    methods: tuple[str, ...] | None = None
    why: str = ""

    def __post_init__(self):
        if self.path.split(".")[0] not in ("pretrain", "evaluate") or "." not in self.path:
            raise ConfigError(f"tunable {self.path!r}: a path starts with 'pretrain.' or 'evaluate.'")
        if (self.choices is None) == (self.low is None or self.high is None) or (
                self.choices is None and not self.low < self.high):
            raise ConfigError(f"tunable {self.path!r}: give either choices or low < high")


@dataclass(frozen=True)
class Method:
    name: str
    title: str
    pretrain: dict | None  # {'loss', 'loss_kwargs', 'projector', 'projector_last_bn', 'predictor'}; None: none
    init: str = "random"  # backbone initialisation before any pretraining ('random' | 'imagenet')
    # merged into every run of the method, e.g. its own backbone or input size ({'backbone': {'arch': ...}})
    hparams: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str
    hparams: dict  # config.KnnProtocol or config.FitProtocol fields
    methods: tuple[str, ...] | None = None  # None: every method
    script: str | None = None  # the study's script this protocol stands for (per-script splits); default: name
    # evaluation settings (EvaluateHP keys, deep-merged after hparams) that the study's code sets for one method
    # (e.g. its own learning rate) or one label fraction (e.g. epochs that grow with the labelled images)
    per_method: dict[str, dict] = field(default_factory=dict)
    per_fraction: dict[float, dict] = field(default_factory=dict)
    fractions: tuple[float, ...] | None = None  # label fractions it runs at; None: the dataset's or profile's
    # (evaluated dataset, pretraining dataset) pairs it runs an encoder of (a transfer recipe: Gravity-2010's
    # CheXpert -> NIH notebook); a method without pretraining runs it on each evaluated dataset named. None: all
    pairings: tuple[tuple[str, str], ...] | None = None

    def runs_on(self, dataset: str, pretrained_on: str | None) -> bool:
        """Whether it evaluates on ``dataset`` an encoder pretrained on ``pretrained_on`` (None: no pretraining)."""
        if self.pairings is None:
            return True
        if pretrained_on is None:
            return dataset in {d for d, _ in self.pairings}
        return (dataset, pretrained_on) in self.pairings


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    seeds: tuple[int, ...]
    variants: tuple[str, ...]  # 'as_published', 'corrected', 'each' (one decision corrected at a time)
    image_size: dict[str, int]  # registry dataset -> image side
    # deep-merged into runs: {'pretrain', 'evaluate', 'protocols': {name: ...}, 'methods': {name: {'pretrain',
    # 'evaluate', 'protocols'}}} (a method's own last)
    overrides: dict = field(default_factory=dict)
    fractions: tuple[float, ...] = (1.0,)
    methods: tuple[str, ...] | None = None
    protocols: tuple[str, ...] | None = None
    datasets: tuple[str, ...] | None = None  # the evaluated datasets it plans; None: all
    needs_gpu: bool = False  # bare `replicate` on a CPU machine does not start this profile
    # side the images are held at when it differs from image_size: crops are cut there, then resized
    source_size: dict[str, int] = field(default_factory=dict)
    # decisions this profile overrides itself, or that do not concern what it runs: neither applied nor recorded
    moot_decisions: tuple[str, ...] = ()
    # seeds of a variant when they differ from ``seeds`` (a cheaper profile may run the as-published one once)
    variant_seeds: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self):
        unknown = set(self.variant_seeds) - set(self.variants)
        if unknown:
            raise ConfigError(f"profile {self.name!r}: variant_seeds names {sorted(unknown)}, which are not among "
                              f"its variants {list(self.variants)}")

    def seeds_of(self, variant: str) -> tuple[int, ...]:
        return self.variant_seeds.get(variant, self.seeds)


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
    # False: a number the source typed in rather than computed (MedSGSSL's paper tables); tables and figures mark it.
    # Where two reported numbers share a cell, the first declared is the one compared with.
    backed_by_runs: bool = True


@dataclass(frozen=True)
class Comparison:
    """A claim of the source that runs can test: ``methods`` beat ``baseline`` under ``protocol`` on the study's
    main metric. The paper gives a verdict per dataset, label fraction and variant, with the seeds' spread."""

    claim: str
    methods: tuple[str, ...]
    baseline: str
    protocol: str


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
    comparisons: tuple[Comparison, ...] = ()  # claims the runs can test (paper: claims.md)
    main_metric: str = "accuracy"
    pretrain_script: str = "pretrain"  # the study's pretraining script (per-script splits)
    # per dataset, the labels that name the same findings in every dataset listed, in one order: the paper's
    # per-label tables add their mean, which compares across label spaces (CheXpert's 5 and NIH's 14 findings)
    shared_labels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    search_space: tuple[Tunable, ...] = ()  # what the source leaves open: `medssl tune` searches it
    # methods of installed packages (plugins.py) added to ``methods``: planned only when named (`--methods`)
    guests: tuple[str, ...] = ()

    def __post_init__(self):
        for what, names in (("dataset", [d.key for d in self.datasets]), ("method", [m.name for m in self.methods]),
                            ("protocol", [p.name for p in self.protocols]),
                            ("decision", [d.name for d in self.decisions]),
                            ("profile", [p.name for p in self.profiles])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ConfigError(f"study {self.name} declares the {what}(s) {dupes} more than once")
        methods, protocols = {m.name for m in self.methods}, {p.name for p in self.protocols}
        decisions = {d.name for d in self.decisions}
        keys = {d.key for d in self.datasets}
        for t in self.search_space:
            if set(t.methods or ()) - methods:
                raise ConfigError(f"study {self.name}: tunable {t.path!r} names unknown methods "
                                  f"{sorted(set(t.methods) - methods)}")
        for ds in self.datasets:
            _known(self.name, f"dataset {ds.key!r}", "pretraining dataset", ds.pretrainings(), keys)
            _known(self.name, f"dataset {ds.key!r}", "method", ds.methods or (), methods)
        _known(self.name, "shared_labels", "dataset", self.shared_labels, keys)
        if len({len(v) for v in self.shared_labels.values()}) > 1:
            raise ConfigError(f"study {self.name}: shared_labels name the same findings in each dataset, so as many "
                              f"in each; got {({k: len(v) for k, v in self.shared_labels.items()})}")
        if not any(ds.evaluated for ds in self.datasets):
            raise ConfigError(f"study {self.name}: no dataset is evaluated (every one says evaluated=False)")
        for d in self.decisions:
            if d.stage not in ("data", "pretrain", "evaluate"):
                raise ConfigError(f"{self.name} decision {d.name!r}: stage must be data, pretrain or evaluate")
            _known(self.name, f"decision {d.name!r}", "method", d.methods or (), methods)
            _known(self.name, f"decision {d.name!r}", "protocol", d.protocols or (), protocols)
            _known(self.name, f"decision {d.name!r}", "dataset", d.datasets or (), keys)
        for p in self.protocols:
            _known(self.name, f"protocol {p.name!r}", "method", (*(p.methods or ()), *p.per_method), methods)
            _known(self.name, f"protocol {p.name!r}", "dataset", {k for pair in p.pairings or () for k in pair}, keys)
        for c in self.comparisons:
            _known(self.name, f"comparison {c.claim[:40]!r}", "method", (*c.methods, c.baseline), methods)
            _known(self.name, f"comparison {c.claim[:40]!r}", "protocol", (c.protocol,), protocols)
        for prof in self.profiles:
            _known(self.name, f"profile {prof.name!r}", "method", prof.methods or (), methods)
            _known(self.name, f"profile {prof.name!r}", "protocol", prof.protocols or (), protocols)
            _known(self.name, f"profile {prof.name!r}", "decision", prof.moot_decisions, decisions)
            _known(self.name, f"profile {prof.name!r}", "dataset", prof.datasets or (), keys)

    def profile(self, name: str) -> Profile:
        for p in self.profiles:
            if p.name == name:
                return p
        names = [p.name for p in self.profiles]
        raise ConfigError(f"{self.name} has no profile {name!r}; choose from {names}.{did_you_mean(name, names)}")

    def dataset(self, key: str) -> StudyDataset:
        for d in self.datasets:
            if d.key == key:
                return d
        keys = [d.key for d in self.datasets]
        raise ConfigError(f"{self.name} has no dataset {key!r}; it uses {keys}.{did_you_mean(key, keys)}")

    @property
    def default_methods(self) -> tuple[str, ...]:
        """The methods a profile runs unless it names its own: the declared ones, not the guests."""
        return tuple(m.name for m in self.methods if m.name not in self.guests)

    def with_guests(self, methods: tuple[Method, ...]) -> Study:
        """The study with ``methods`` (plug-ins) as guests, but for those it declares itself. A guest SSL method is
        evaluated wherever the study's own SSL methods are (protocols and datasets that name the methods they
        take), a guest without pretraining wherever the study's baselines are."""
        new = tuple(m for m in methods if m.name not in {own.name for own in self.methods})
        if not new:
            return self

        def widened(names: tuple[str, ...] | None) -> tuple[str, ...] | None:
            if names is None:
                return None
            kinds = {self.method(n).pretrain is not None for n in names}
            return (*names, *(m.name for m in new if (m.pretrain is not None) in kinds))

        return replace(self, methods=(*self.methods, *new), guests=(*self.guests, *(m.name for m in new)),
                       protocols=tuple(replace(p, methods=widened(p.methods)) for p in self.protocols),
                       datasets=tuple(replace(d, methods=widened(d.methods)) for d in self.datasets))

    def method(self, name: str) -> Method:
        return _pick(self.methods, name, f"{self.name} method")

    def protocol(self, name: str) -> Protocol:
        return _pick(self.protocols, name, f"{self.name} protocol")

    def reported_rows(self) -> list[dict]:
        return [{"dataset": r.dataset, "method": r.method, "protocol": r.protocol, "fraction": r.fraction,
                 "metric": r.metric, "value": r.value, "source": r.source, "note": r.note,
                 "backed_by_runs": r.backed_by_runs} for r in self.reported]


def _as_declared(value) -> bool:
    return isinstance(value, str) and value == AS_DECLARED


def _known(study: str, where: str, what: str, names, valid: set[str]) -> None:
    unknown = sorted(set(names) - valid)
    if unknown:
        raise ConfigError(f"study {study}, {where} names unknown {what}(s) {unknown}; declared: {sorted(valid)}")


def _pick(items, name: str, what: str):
    for item in items:
        if item.name == name:
            return item
    names = [i.name for i in items]
    raise ConfigError(f"Unknown {what} {name!r}; choose from {names}.{did_you_mean(name, names)}")


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


# a study's source notes (its source's settings, where each reported number was read, each decision's evidence)
STUDY_NOTES = Path(__file__).resolve().parents[2] / "docs" / "studies"


def source_notes(study: Study) -> str | None:
    """The path of the study's source notes, ``docs/studies/<name>.md`` relative to the checkout; None without one."""
    return f"docs/studies/{study.name}.md" if (STUDY_NOTES / f"{study.name}.md").is_file() else None


def describe(study: Study) -> str:
    """A study as text: what `medssl study show` prints."""
    notes = source_notes(study)
    lines = [f"{study.name}: {study.title}", f"  {study.citation}", *([f"  Source notes: {notes}"] if notes else []),
             "", "Datasets (first source used; later ones are stand-ins):"]
    lines += [f"  {d.key:16s} {d.title}: {', '.join(d.sources)}; split {d.split}" for d in study.datasets]
    lines += ["", "Methods:"]
    lines += [f"  {m.name:16s} {m.title}" + ("" if m.pretrain else " (no pretraining)")
              + (f"; method {m.pretrain['name']} {m.pretrain.get('loss_kwargs', {})}" if m.pretrain else "")
              + (" [installed plug-in: runs when named in --methods]" if m.name in study.guests else "")
              for m in study.methods]
    lines += ["", "Protocols:"]
    lines += [f"  {p.name:16s} {p.title}" + (f" (methods: {', '.join(p.methods)})" if p.methods else "")
              for p in study.protocols]
    lines += ["", "Decisions (as published -> corrected):"]
    for d in study.decisions:
        scope = "".join([f"; methods {', '.join(d.methods)}" if d.methods else "",
                         f"; protocols {', '.join(d.protocols)}" if d.protocols else "",
                         f"; datasets {', '.join(d.datasets)}" if d.datasets else ""])
        lines.append(f"  {d.name:18s} {', '.join(d.params)} = {d.as_published!r} -> {d.corrected!r} "
                     f"[{d.stage}{scope}]")
        if d.labels:
            lines.append(f"  {'':18s} {d.label(AS_PUBLISHED)} -> {d.label(CORRECTED)}")
        lines.append(f"  {'':18s} {d.description}")
    lines += ["", "Profiles:"]
    for p in study.profiles:
        seeds = ", ".join(f"{v} {list(p.seeds_of(v))}" for v in p.variants) if p.variant_seeds else list(p.seeds)
        lines.append(f"  {p.name:8s} {p.description}; seeds {seeds}, variants {list(p.variants)}, "
                     f"fractions {list(p.fractions)}" + (", needs a GPU" if p.needs_gpu else "")
                     + (f"; moot decisions {list(p.moot_decisions)}" if p.moot_decisions else ""))
    lines += ["", "Reported numbers:"]
    lines += [f"  {r.dataset}/{r.method}/{r.protocol}" + (f" at {r.fraction:g}" if r.fraction not in (None, 1.0)
                                                          else "")
              + f" {r.metric} = {r.value} ({r.source})" + (f" {r.note}" if r.note else "")
              for r in study.reported] or ["  none"]
    if study.claims:
        lines += ["", "Claims:"] + [f"  {c}" for c in study.claims]
    return "\n".join(lines)
