"""Split schemes: how a loaded dataset's images become train/val/test, by the name a study declares.

A scheme is a function ``(dataset, split, seed) -> SplitIndices``: ``dataset`` the loaded ``ArrayDataset``
(labels, patient ids, views; images are not read), ``split`` the typed ``config.Split`` that names the scheme
and its fields, ``seed`` the split seed of the run (``run_inputs.split_seed``). Indices address the dataset's
*pool*: all its source splits (e.g. ``train``/``val``/``test``, NIH's ``train_val``/``test``, CheXpert's
``train``/``valid``, ``all``) laid end to end, in the source's own image order where it numbers its images
(CSV row, MedIMeta image number), after the declared view filter and with labels under the declared
uncertain/blank policy. ``split_dataset`` applies a scheme and gathers the images.

Schemes and the ``Split`` fields each reads (every scheme also reads ``roles``, ``views``, ``uncertain``,
``blank`` and the seed policy):

- ``official``: the source's own splits (``roles``: role -> source split(s), default train <- train|train_val,
  val <- val|valid, test <- test; a val or test the source lacks is empty, a missing train an error).
- ``merge_val``: ``merge`` splits pooled, ``val_fraction`` of each class held out as val; official test.
- ``holdout_val``: ``val_fraction`` of each class of the official train held out as val; official test.
- ``stratified``: ``test_fraction`` of each class as test, then ``val_fraction`` of the rest as val.
- ``stratify`` false: these three hold each fraction out over all images, as sklearn's ``train_test_split``
  without ``stratify=`` does (SmallDataSSL's code), instead of class by class.
- ``random_split``: ``torch.utils.data.random_split(pool, fractions, generator=manual_seed(seed))``, the
  train/val/test ``fractions`` (MIMeta: (0.8, 0.1, 0.1), seed 42).
- ``patient``: no patient on two sides. Unique patients in order of first appearance (``patient_fraction``: only
  that share of them, drawn first as ``np.random.choice`` draws), then sklearn's ``train_test_split`` with
  ``test_fraction`` (if given; else the official test), then ``val_fraction`` of the remaining patients
  (MedSGSSL: 0.02 then 0.052, seed 42). Fractions are of patients. ``train_patients``: only that share of the
  training patients stays in train, drawn as ``np.random.RandomState(seed).choice`` (MedSGSSL's fine-tuning on
  20 % of them).
- ``sample``: the ``base`` scheme, then ``sizes`` images of the named roles, drawn as pandas'
  ``DataFrame.sample(n, random_state=sample_seed)`` draws them (None: the first n). ``distinct_roles``: a role
  draws only images that no earlier role (train, val, test) drew, e.g. val the first n of a list, test the next n.

``merge`` names the pool of ``stratified``/``random_split``/``patient`` too; empty, it is every source split but
the official test when the scheme does not carve its own test. ``per_part``: a merged dataset is split dataset
by dataset with the scheme, each as if alone, and the roles concatenated (no image that one dataset's
evaluation tests on is trained on). ``label_subset`` draws a run's labelled fraction of train: stratified
(``splits.label_fraction``) or, with ``label_fraction: random_split``, MIMeta's unstratified
``random_split(train, [f, 1 - f])`` with the generator that made the split (under another scheme, a generator
seeded with the split's seed), or with ``label_fraction: sample`` pandas' ``train.sample(int(f * n),
random_state=sample_seed)`` (Gravity-2010: the same images for every seed). Stratifying a multi-label set goes
by each image's rarest positive label (``splits._strata``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from medssl_core.common.errors import ConfigError
from medssl_core.data import chest
from medssl_core.data.splits import holdout_patients, label_fraction, stratified_split, unique_in_order

if TYPE_CHECKING:
    from medssl_core.config import Split
    from medssl_core.data.dataset import ArrayDataset

ROLES = ("train", "val", "test")
DEFAULT_ROLES = {"train": ("train", "train_val"), "val": ("val", "valid"), "test": ("test",)}
# Fields only some schemes read: set on another scheme, they are a mistake in the declaration.
SCHEME_FIELDS = ("merge", "val_fraction", "test_fraction", "fractions", "base", "sizes", "sample_seed",
                 "patient_fraction", "train_patients")
STRATIFYING = ("merge_val", "holdout_val", "stratified")  # the schemes that read split.stratify


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class Pool:
    """Every image of a dataset that passed the view filter, in pool order, with where it lives."""

    parts: tuple[str, ...]  # the dataset's source splits
    part: np.ndarray  # per image: index into ``parts``
    row: np.ndarray  # per image: row within its source split
    labels: np.ndarray
    patient_ids: np.ndarray | None
    source_ordered: bool  # ordered by the source's own image numbers (else source splits end to end)
    member: np.ndarray | None = None  # a merged dataset: per image, the index of the dataset it comes from

    def __len__(self) -> int:
        return len(self.part)

    def positions(self, parts: tuple[str, ...]) -> np.ndarray:
        """Pool positions of the images of ``parts``: several source splits of a source-ordered pool in the
        source's order; else split by split in the order given, each in its own order (as concatenating them
        would: an official list keeps its order)."""
        unknown = [p for p in parts if p not in self.parts]
        if unknown:
            raise ConfigError(f"the dataset has no split(s) {unknown}; its splits are {list(self.parts)}")
        codes = [self.parts.index(p) for p in parts]
        if self.source_ordered and len(codes) > 1:
            return np.flatnonzero(np.isin(self.part, codes))
        return np.concatenate([self._own_order(c) for c in codes] or [np.zeros(0, dtype=np.int64)])

    def _own_order(self, code: int) -> np.ndarray:
        where = np.flatnonzero(self.part == code)
        return where[np.argsort(self.row[where], kind="stable")]


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class SplitIndices:
    """What a scheme returns: pool positions per role, in the order the role's images are used."""

    pool: Pool
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def of(self, role: str) -> np.ndarray:
        return getattr(self, role)


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class SplitPart:
    """One role's images, labels and patient ids (None where the source has none)."""

    images: np.ndarray
    labels: np.ndarray
    patient_ids: np.ndarray | None


Scheme = Callable[["ArrayDataset", "Split", int], SplitIndices]


@dataclass(frozen=True)
class SchemeInfo:
    function: Scheme
    needs: tuple[str, ...]  # Split fields that must be set
    reads: tuple[str, ...] = ()  # Split fields it may read besides


# -- the pool ---------------------------------------------------------------------------------------------------
def build_pool(ds: ArrayDataset, split: Split) -> Pool:
    """The dataset's images that pass ``split.views``, with labels under its uncertain/blank policies."""
    parts = tuple(ds.labels)
    part = np.concatenate([np.full(len(ds.labels[p]), i, dtype=np.int64) for i, p in enumerate(parts)])
    row = np.concatenate([np.arange(len(ds.labels[p])) for p in parts])
    labels = np.concatenate([_labels_of(ds, p, split) for p in parts])
    has_patients = bool(parts) and all(p in ds.patient_ids for p in parts)
    patient_ids = np.concatenate([ds.patient_ids[p] for p in parts]) if has_patients else None
    keep = np.arange(len(part))
    source_ordered = bool(parts) and all(p in ds.source_index for p in parts)
    if source_ordered:
        keep = np.argsort(np.concatenate([ds.source_index[p] for p in parts]), kind="stable")
    if split.views:
        if not all(p in ds.views for p in parts):
            raise ConfigError(f"{ds.name} records no views: remove split.views (it filters chest X-ray views).")
        views = np.concatenate([ds.views[p] for p in parts])
        keep = keep[chest.view_mask(views[keep], split.views)]
    member = np.concatenate([ds.member[p] for p in parts])[keep] if ds.members else None
    return Pool(parts, part[keep], row[keep], labels[keep], None if patient_ids is None else patient_ids[keep],
                source_ordered, member)


def _labels_of(ds: ArrayDataset, part: str, split: Split) -> np.ndarray:
    """Labels of a source split; CheXpert's raw codes under the declared uncertain and blank policies."""
    if part not in ds.label_codes:
        if split.uncertain is not None or split.blank is not None:
            raise ConfigError(f"{ds.name} has no uncertain or blank labels: remove split.uncertain/split.blank.")
        return ds.labels[part]
    if split.uncertain is None or split.blank is None:
        raise ConfigError(f"{ds.name} has uncertain (-1) and blank labels: declare split.uncertain "
                          f"({' | '.join(chest.UNCERTAIN_POLICIES)}) and split.blank "
                          f"({' | '.join(chest.BLANK_POLICIES)}) as the study does.")
    return chest.apply_label_policy(ds.label_codes[part], split.uncertain, split.blank)


def official_parts(pool: Pool, split: Split, role: str) -> tuple[str, ...]:
    """The source split(s) that play ``role``: the declared ``roles`` entry (one name or several, e.g. CheXpert's
    train and valid together), else the first default name present; () when none."""
    if role in split.roles:
        named = split.roles[role]
        return (named,) if isinstance(named, str) else tuple(named)
    return tuple(p for p in DEFAULT_ROLES[role] if p in pool.parts)[:1]


def official_positions(pool: Pool, split: Split, role: str) -> np.ndarray:
    return pool.positions(official_parts(pool, split, role))


def pool_parts(pool: Pool, split: Split, *, carves_test: bool) -> tuple[str, ...]:
    """The source splits a scheme divides: ``merge``, else all of them but an official test it keeps whole."""
    if split.merge:
        return tuple(split.merge)
    test = () if carves_test else official_parts(pool, split, "test")
    return tuple(p for p in pool.parts if p not in test)


# -- the schemes ------------------------------------------------------------------------------------------------
def official(ds: ArrayDataset, split: Split, seed: int) -> SplitIndices:
    pool = build_pool(ds, split)
    if not official_parts(pool, split, "train"):
        raise ConfigError(f"{ds.name} has no official train split (its splits: {', '.join(pool.parts)}): name the "
                          "source split of each role in split.roles, or declare another scheme.")
    return SplitIndices(pool, *(official_positions(pool, split, r) for r in ROLES))


def hold_out(labels: np.ndarray, fraction: float, split: Split, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held) positions of ``labels``: ``fraction`` of each class held out, or (``split.stratify`` false)
    as sklearn's ``train_test_split(range(n), test_size=fraction, random_state=seed)`` draws them, in its order."""
    if split.stratify:
        return stratified_split(labels, fraction, seed)
    return holdout_patients(np.arange(len(labels)), fraction, seed)  # train_test_split over positions


def merge_val(ds: ArrayDataset, split: Split, seed: int) -> SplitIndices:
    """Kermany (SmallDataSSL): train + val merged, then a fraction held out as val."""
    pool = build_pool(ds, split)
    merged = pool.positions(tuple(split.merge))
    rest, held = hold_out(pool.labels[merged], split.val_fraction, split, seed)
    return SplitIndices(pool, merged[rest], merged[held], official_positions(pool, split, "test"))


def holdout_val(ds: ArrayDataset, split: Split, seed: int) -> SplitIndices:
    """BreaKHis (SmallDataSSL): val drawn from the given train split."""
    pool = build_pool(ds, split)
    train = official_positions(pool, split, "train")
    rest, held = hold_out(pool.labels[train], split.val_fraction, split, seed)
    return SplitIndices(pool, train[rest], train[held], official_positions(pool, split, "test"))


def stratified(ds: ArrayDataset, split: Split, seed: int) -> SplitIndices:
    """Kather (SmallDataSSL): a test fraction, then a val fraction of the rest."""
    pool = build_pool(ds, split)
    whole = pool.positions(pool_parts(pool, split, carves_test=True))
    rest, test = hold_out(pool.labels[whole], split.test_fraction, split, seed)
    train, val = hold_out(pool.labels[whole[rest]], split.val_fraction, split, seed)
    return SplitIndices(pool, whole[rest][train], whole[rest][val], whole[test])


def random_split(ds: ArrayDataset, split: Split, seed: int) -> SplitIndices:
    """MIMeta: ``torch.utils.data.random_split`` over the pool with a generator seeded by ``seed``."""
    pool = build_pool(ds, split)
    whole = pool.positions(pool_parts(pool, split, carves_test=True))
    parts = torch_random_split(len(whole), split.fractions, seed)
    return SplitIndices(pool, *(whole[p] for p in parts))


def patient(ds: ArrayDataset, split: Split, seed: int) -> SplitIndices:
    """MedSGSSL: patient-level, unique patients split by sklearn's train_test_split (test, then val)."""
    pool = build_pool(ds, split)
    if pool.patient_ids is None:
        raise ConfigError(f"{ds.name} has no patient ids: a patient-level split needs them (NIH, CheXpert).")
    carves_test = split.test_fraction is not None
    whole = pool.positions(pool_parts(pool, split, carves_test=carves_test))
    ids = pool.patient_ids[whole]
    patients = unique_in_order(ids)
    if split.patient_fraction is not None:  # a share of the patients first, all their images (Gravity-2010)
        kept = np.random.RandomState(seed).choice(patients, int(len(patients) * split.patient_fraction),
                                                  replace=False)
        whole = whole[np.isin(ids, kept)]
        ids = pool.patient_ids[whole]
        patients = unique_in_order(ids)
    test_patients = np.zeros(0, dtype=patients.dtype)
    if carves_test:
        patients, test_patients = holdout_patients(patients, split.test_fraction, seed)
    train_patients, val_patients = holdout_patients(patients, split.val_fraction, seed)
    if split.train_patients is not None:  # MedSGSSL options 6/7 fine-tune on 20 % of the training patients
        train_patients = np.random.RandomState(seed).choice(
            train_patients, int(len(train_patients) * split.train_patients), replace=False)
    test = whole[np.isin(ids, test_patients)] if carves_test else official_positions(pool, split, "test")
    return SplitIndices(pool, whole[np.isin(ids, train_patients)], whole[np.isin(ids, val_patients)], test)


def sample(ds: ArrayDataset, split: Split, seed: int) -> SplitIndices:
    """Gravity-2010: ``df.sample(n, random_state=...)`` subsets of a larger split (the ``base`` scheme's)."""
    base = SCHEMES[split.base].function(ds, split, seed)
    picked: dict[str, np.ndarray] = {}
    for role in ROLES:
        idx = base.of(role)
        if split.distinct_roles and picked:  # roles that share a source split (NIH's test list as val and test)
            idx = idx[~np.isin(idx, np.concatenate(list(picked.values())))]
        if role in split.sizes:
            idx = idx[sample_positions(len(idx), split.sizes[role], split.sample_seed, f"{ds.name} {role}")]
        picked[role] = idx
    return SplitIndices(base.pool, **picked)


def torch_random_split(n: int, fractions, seed: int) -> list[np.ndarray]:
    """The index lists of ``torch.utils.data.random_split(range(n), fractions, torch.Generator().manual_seed(
    seed))``: lengths floor(f * n), the remainder added one by one from the first; one randperm."""
    import torch  # the data layer needs torch only here

    subsets = torch.utils.data.random_split(range(n), list(fractions), torch.Generator().manual_seed(seed))
    return [np.asarray(s.indices, dtype=np.int64) for s in subsets]


def torch_random_split_subset(n: int, fractions, seed: int, fraction: float) -> np.ndarray:
    """Positions in the train part of ``torch_random_split(n, fractions, seed)`` that ``random_split(train,
    [fraction, 1 - fraction], generator)`` keeps, the generator carrying on from the first split (MIMeta)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    train = torch.utils.data.random_split(range(n), list(fractions), generator)[0]
    kept = torch.utils.data.random_split(range(len(train)), [fraction, 1 - fraction], generator)[0]
    return np.asarray(kept.indices, dtype=np.int64)


def sample_positions(n: int, k: int, random_state: int | None, what: str = "the split") -> np.ndarray:
    """Positions pandas' ``DataFrame.sample(k, random_state=random_state)`` takes from n rows, in its order
    (``RandomState(random_state).choice(n, k, replace=False)``); None: the first k rows."""
    if k > n:
        raise ConfigError(f"cannot sample {k} images from {what}, which holds {n}; lower split.sizes.")
    if random_state is None:
        return np.arange(k)
    return np.random.RandomState(random_state).choice(n, k, replace=False).astype(np.int64)


SCHEMES: dict[str, SchemeInfo] = {
    "official": SchemeInfo(official, ()),
    "merge_val": SchemeInfo(merge_val, ("merge", "val_fraction")),
    "holdout_val": SchemeInfo(holdout_val, ("val_fraction",)),
    "stratified": SchemeInfo(stratified, ("test_fraction", "val_fraction"), ("merge",)),
    "random_split": SchemeInfo(random_split, ("fractions",), ("merge",)),
    "patient": SchemeInfo(patient, ("val_fraction",), ("test_fraction", "merge", "patient_fraction", "train_patients")),
    "sample": SchemeInfo(sample, ("base", "sizes"), ("sample_seed",)),
}


def get_scheme(name: str) -> SchemeInfo:
    if name not in SCHEMES:
        raise ConfigError(f"unknown split scheme {name!r}; valid schemes: {', '.join(SCHEMES)}")
    return SCHEMES[name]


# -- validation and use -----------------------------------------------------------------------------------------
def split_problems(split: Split) -> list[str]:
    """What is wrong with a declared split (empty when nothing): unknown scheme, a field it needs left unset, a
    field it does not read set, a value out of range. ``config.Split`` validates with it."""
    if split.scheme not in SCHEMES:
        return [f"unknown split scheme {split.scheme!r}; valid schemes: {', '.join(SCHEMES)}"]
    problems = _field_problems(split)
    problems += _value_problems(split)
    return problems


def _field_problems(split: Split) -> list[str]:
    info = SCHEMES[split.scheme]
    needs, reads = set(info.needs), set(info.needs) | set(info.reads)
    if split.scheme == "sample":
        if split.base in (None, "sample") or split.base not in SCHEMES:
            return [f"split.base must name the scheme that 'sample' draws from, one of "
                    f"{', '.join(s for s in SCHEMES if s != 'sample')}; got {split.base!r}"]
        needs |= set(SCHEMES[split.base].needs)
        reads |= set(SCHEMES[split.base].needs) | set(SCHEMES[split.base].reads)
    problems = [f"scheme {split.scheme!r} needs split.{f}" for f in sorted(needs) if not _is_set(split, f)]
    problems += [f"split.{f} is not read by scheme {split.scheme!r} (it reads "
                 f"{', '.join(sorted(reads)) or 'none of ' + ', '.join(SCHEME_FIELDS)}); remove it"
                 for f in SCHEME_FIELDS if f not in reads and _is_set(split, f)]
    return problems


def _is_set(split: Split, field: str) -> bool:
    value = getattr(split, field)
    return value is not None and value != () and value != {}


def _value_problems(split: Split) -> list[str]:
    problems = [f"split.{f} must be in (0, 1), got {getattr(split, f)}" for f in ("val_fraction", "test_fraction")
                if getattr(split, f) is not None and not 0 < getattr(split, f) < 1]
    if split.fractions is not None and (len(split.fractions) != 3 or abs(sum(split.fractions) - 1) > 1e-9
                                        or min(split.fractions) < 0):
        problems.append(f"split.fractions are the train, val and test fractions (three, >= 0, summing to 1); "
                        f"got {list(split.fractions)}")
    problems += [f"split.sizes[{r!r}] must be positive, got {n}" for r, n in split.sizes.items() if n < 1]
    if split.distinct_roles and split.scheme != "sample":
        problems.append(f"split.distinct_roles is read by the scheme 'sample' only, not {split.scheme!r}; remove it")
    scheme = split.base if split.scheme == "sample" else split.scheme
    if not split.stratify and scheme not in STRATIFYING:
        problems.append(f"split.stratify is read by the schemes {', '.join(STRATIFYING)} only, not {scheme!r}; "
                        "remove it")
    unknown = sorted(set(split.views) - set(chest.VIEW_FILTERS))
    if unknown:
        problems.append(f"unknown view(s) {unknown} in split.views; views are {', '.join(chest.VIEW_FILTERS)}")
    return problems


def assign(ds: ArrayDataset, split: Split, seed: int) -> SplitIndices:
    """Apply the split's scheme (labels, patient ids and views only: no image is touched)."""
    scheme = get_scheme(split.scheme).function
    if not split.per_part:
        return scheme(ds, split, seed)
    if not ds.members:
        raise ConfigError(f"split.per_part splits a merged dataset one dataset at a time; {ds.name} is a single "
                          "dataset: remove per_part.")
    pool = build_pool(ds, split)
    roles: dict[str, list[np.ndarray]] = {r: [] for r in ROLES}
    for m in range(len(ds.members)):
        # the member's own pool lists its images in the order they hold in the merged pool
        where = np.flatnonzero(pool.member == m)
        alone = scheme(ds.member_view(m), split, seed)
        if len(alone.pool) != len(where):
            raise AssertionError(f"{ds.members[m]}: {len(alone.pool)} images alone, {len(where)} in the merge")
        for r in ROLES:
            roles[r].append(where[alone.of(r)])
    return SplitIndices(pool, *(np.concatenate(roles[r]) for r in ROLES))


def label_subset(ds: ArrayDataset, split: Split, split_seed: int, train_labels: np.ndarray, fraction: float,
                 run_seed: int) -> np.ndarray:
    """Positions in the train role of the labelled ``fraction`` of a run (see the module's docstring)."""
    if split.label_fraction == "stratified":
        return label_fraction(train_labels, fraction, run_seed)
    if split.label_fraction == "sample":
        n = len(train_labels)
        return sample_positions(n, int(n * fraction), split.sample_seed, "the training split")
    if split.per_part:
        raise ConfigError("split.label_fraction 'random_split' carries on the generator of one split; a merged "
                          "dataset split per_part has one per dataset: use label_fraction 'stratified'.")
    if split.scheme != "random_split":  # no generator to carry on: a fresh one, seeded as the split
        return np.sort(torch_random_split(len(train_labels), (fraction, 1 - fraction), split_seed)[0])
    pool = build_pool(ds, split)
    n = len(pool.positions(pool_parts(pool, split, carves_test=True)))
    return np.sort(torch_random_split_subset(n, split.fractions, split_seed, fraction))


def split_dataset(ds: ArrayDataset, split: Split, seed: int) -> dict[str, SplitPart]:
    """train/val/test images, labels and patient ids, as the split's scheme assigns them."""
    indices = assign(ds, split, seed)
    pool = indices.pool
    out = {}
    for role in ROLES:
        idx = indices.of(role)
        ids = pool.patient_ids[idx] if pool.patient_ids is not None else None
        out[role] = SplitPart(gather_images(ds.images, pool, idx), pool.labels[idx], ids)
    return out


def gather_images(images: dict[str, np.ndarray], pool: Pool, idx: np.ndarray) -> np.ndarray:
    """The images at pool positions ``idx``, in that order; a whole source split in its order is returned as is
    (no copy of a large official split)."""
    parts, rows = pool.part[idx], pool.row[idx]
    first = images[pool.parts[0]]
    if len(idx) and (parts == parts[0]).all():
        whole = images[pool.parts[parts[0]]]
        if len(rows) == len(whole) and np.array_equal(rows, np.arange(len(whole))):
            return whole
    out = np.empty((len(idx), *first.shape[1:]), dtype=first.dtype)
    for code in np.unique(parts):
        here = parts == code
        out[here] = images[pool.parts[code]][rows[here]]
    return out
