"""Seeded splits: stratified, patient-level, and nested stratified label fractions."""

from __future__ import annotations

import math

import numpy as np

from medssl_core.errors import ConfigError


def _strata(labels: np.ndarray) -> np.ndarray:
    """Stratify multi-class by class; multi-label by its first positive label (or 'none')."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return labels
    has = labels.max(axis=1) > 0
    return np.where(has, labels.argmax(axis=1), -1)


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


def label_fraction(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a stratified ``fraction`` of the labelled set, nested across fractions for one seed.

    Each class is permuted once by ``seed``; a fraction takes the first ceil(fraction * n_c) of each class
    (at least one), so the 1 % subset lies inside the 10 % subset, which lies inside 100 %.
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"label fraction must be in (0, 1], got {fraction}")
    strata = _strata(labels)
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(strata):
        idx = np.flatnonzero(strata == c)
        idx = idx[rng.permutation(len(idx))]
        keep.append(idx[: max(1, math.ceil(fraction * len(idx)))])
    return np.sort(np.concatenate(keep))
