"""Seeded splits: stratified, patient-level, and nested stratified label fractions."""

from __future__ import annotations

import math

import numpy as np

from medssl_core.common.errors import ConfigError


def _strata(labels: np.ndarray) -> np.ndarray:
    """Stratify multi-class by class; multi-label by its rarest positive label (-1: no positive), the rule of
    iterative stratification (Sechidis et al. 2011), so rare labels keep their share."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return labels
    positive = labels == 1  # MISSING (-1) is not a positive
    by_rarity = np.argsort(positive.sum(axis=0), kind="stable")  # rarest first, ties by column
    rank = np.empty(labels.shape[1], dtype=np.int64)
    rank[by_rarity] = np.arange(labels.shape[1])
    rarest = np.where(positive, rank, labels.shape[1]).min(axis=1)
    return np.where(rarest < labels.shape[1], by_rarity[np.minimum(rarest, labels.shape[1] - 1)], -1)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, held_out) with ``fraction`` of each class held out, seeded."""
    if not 0 < fraction < 1:
        raise ConfigError(f"split fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    strata = _strata(labels)
    held = []
    for c in np.unique(strata):
        idx = np.flatnonzero(strata == c)
        rng.shuffle(idx)
        held.append(idx[: round(fraction * len(idx))])
    held_out = np.sort(np.concatenate(held))
    rest = np.setdiff1d(np.arange(len(strata)), held_out)
    return rest, held_out


def patient_split(patient_ids: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices so that no patient appears on both sides; about ``fraction`` of images held out."""
    if not 0 < fraction < 1:
        raise ConfigError(f"split fraction must be in (0, 1), got {fraction}")
    patient_ids = np.asarray(patient_ids)
    patients, inverse, counts = np.unique(patient_ids, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(patients))
    target = fraction * len(patient_ids)
    chosen = np.zeros(len(patients), dtype=bool)
    total = 0
    for p in order:
        if total >= target:
            break
        chosen[p] = True
        total += counts[p]
    held = chosen[inverse]
    return np.flatnonzero(~held), np.flatnonzero(held)


def unique_in_order(values: np.ndarray) -> np.ndarray:
    """Distinct values in order of first appearance (pandas' ``Series.unique``)."""
    values = np.asarray(values)
    _, first = np.unique(values, return_index=True)
    return values[np.sort(first)]


def holdout_patients(patients: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held) patients: ``sklearn.model_selection.train_test_split(patients, test_size=fraction,
    random_state=seed)`` itself, so a study that split its unique patients that way is reproduced exactly:
    ceil(fraction * n) patients held out, ``rest`` in the shuffled order a second split draws from."""
    if not 0 < fraction < 1:
        raise ConfigError(f"split fraction must be in (0, 1), got {fraction}")
    from sklearn.model_selection import train_test_split  # slow to import; only patient splits need it

    rest, held = train_test_split(np.asarray(patients), test_size=fraction, random_state=seed)
    return rest, held


def round_half_up(x: float) -> int:
    """Nearest integer, halves up (not Python's round-half-even); the epsilon absorbs float noise such as
    0.01 * 250 = 2.5000000000000004 or 0.29 * 50 = 14.499999999999998."""
    return math.floor(x + 0.5 + 1e-9)


def label_fraction(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a stratified ``fraction`` of the labelled set, nested across fractions for one seed.

    Single-label (N,): each class c, permuted once by ``seed``, keeps its first max(1, round_half_up(fraction
    * n_c)) images, so every class present stays present and 1 % of 250 images of a class is 3 (2.5 rounds up).
    Multi-label (N, L): exactly max(1, round_half_up(fraction * N)) images, the first ones of one seeded order
    of the whole set in which every stratum (an image's rarest positive label, or no positive) is spread
    evenly, so any prefix holds each stratum's share to within one image. 1 % of NIH ChestX-ray14's 112,120
    images is 1,121 images, with about 1 % of each label's positives.
    In both cases the 1 % subset lies inside the 10 % subset, which lies inside 100 %.
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"label fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    if labels.ndim == 2:
        keep = _spread_order(_strata(labels), rng)[: max(1, round_half_up(fraction * len(labels)))]
        return np.sort(keep)
    kept = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        kept.append(idx[: max(1, round_half_up(fraction * len(idx)))])
    return np.sort(np.concatenate(kept))


def _spread_order(strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A seeded order of all indices where the k-th of a stratum's n members sits at (k + 0.5) / n of the way:
    proportional interleaving, ties broken at random."""
    position = np.empty(len(strata))
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        position[idx[rng.permutation(len(idx))]] = (np.arange(len(idx)) + 0.5) / len(idx)
    return np.lexsort((rng.random(len(strata)), position))
