"""Classification metrics from scores: accuracy, balanced accuracy, AUC, F1/precision/recall, and a collapse flag
when a model predicts a single class. Multi-label: per-label ROC-AUC and their mean (``auc``, the headline) and mean
average precision, each label scored on its observed entries (MISSING left out); per-label accuracy is
``label_accuracy``, never ``accuracy``: predicting every label absent scores ~0.95 on ChestMNIST.

Binary and multi-label decisions are made at 0.5 under the plain names (``f1``, ``precision``, ``recall``,
``label_accuracy``: MedMNIST's ACC, which reported numbers are compared with), and, given thresholds chosen for F1
(on validation, or wherever ``thresholds_on`` says), again under the same names with ``_tuned`` appended."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
from sklearn import metrics as skm

from medssl_core.data.labels import MULTI_LABEL, observed_mask


def choose_thresholds(task: str, y_val: np.ndarray, scores_val: np.ndarray) -> np.ndarray | None:
    """Per positive class (binary) or per label (multi-label): the threshold maximising F1 on the observed
    validation labels."""
    if task == "binary":
        known = observed_mask(y_val)
        return np.array([_best_f1_threshold(y_val[known], scores_val[known, 1])])
    if task == MULTI_LABEL:
        return np.array([_best_f1_threshold(*_observed_column(y_val, scores_val, j)) for j in range(y_val.shape[1])])
    return None


def _observed_column(y: np.ndarray, scores: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    known = observed_mask(y[:, j])
    return y[known, j], scores[known, j]


def _best_f1_threshold(y: np.ndarray, s: np.ndarray) -> float:
    if len(y) == 0 or y.min() == y.max():
        return 0.5
    precision, recall, thresholds = skm.precision_recall_curve(y, s)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[np.argmax(f1[:-1])])


def classification_metrics(task: str, y: np.ndarray, scores: np.ndarray,
                           thresholds: np.ndarray | None = None) -> dict[str, float]:
    """``scores``: (N, C) class probabilities (multi-label: (N, L) per-label probabilities). Labels equal to
    MISSING are left out (single-label: the whole sample; multi-label: that label of that sample)."""
    y = np.asarray(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if task == MULTI_LABEL:
            return _multilabel_metrics(y, scores, thresholds)
        known = observed_mask(y)
        return _single_label_metrics(task, y[known], scores[known], thresholds)


def _multilabel_metrics(y: np.ndarray, scores: np.ndarray, thresholds: np.ndarray | None) -> dict[str, float]:
    columns = [_observed_column(y, scores, j) for j in range(y.shape[1])]
    per_label: dict[str, float] = {}
    aucs, aps = [], []
    for j, (yj, sj) in enumerate(columns):
        if len(np.unique(yj)) == 2:  # AUC and AP need both classes observed
            aucs.append(float(skm.roc_auc_score(yj, sj)))
            aps.append(float(skm.average_precision_score(yj, sj)))
            per_label[f"auc_label{j}"] = aucs[-1]
    out = {"auc": _mean(aucs), **per_label, "ap": _mean(aps),
           **_at_half_and_tuned(lambda t: _label_decisions(columns, t), len(columns), thresholds)}
    out["collapsed"] = float(_constant_scores(y, scores))
    return out


def _at_half_and_tuned(decisions: Callable[[np.ndarray], dict[str, float]], n_thresholds: int,
                       thresholds: np.ndarray | None) -> dict[str, float]:
    """``decisions`` at threshold 0.5, and with '_tuned' names at ``thresholds`` where there are some."""
    out = decisions(np.full(n_thresholds, 0.5))
    if thresholds is not None:
        out.update({f"{name}_tuned": value for name, value in decisions(thresholds).items()})
    return out


def _label_decisions(columns: list[tuple[np.ndarray, np.ndarray]], thresholds: np.ndarray) -> dict[str, float]:
    """Each label present where its score reaches its threshold: F1, precision and recall (means over the labels
    observed at all) and the accuracy over every observed (sample, label) entry."""
    decided = [(yj, (sj >= t).astype(int)) for (yj, sj), t in zip(columns, thresholds, strict=True) if len(yj)]
    out = _decision_means(decided)
    n_known = sum(len(yj) for yj, _ in decided)
    out["label_accuracy"] = sum(int((pred == yj).sum()) for yj, pred in decided) / n_known if n_known else math.nan
    return out


def _decision_means(decided: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Mean F1, precision and recall of (0/1 labels, 0/1 predictions) pairs, each 0 where undefined (sklearn's
    zero_division=0), counted directly: sklearn's scorers cost milliseconds a call, and a fit scores every label at
    every epoch."""
    scores: dict[str, list[float]] = {"f1": [], "precision": [], "recall": []}
    for yj, pred in decided:
        positive, predicted = yj == 1, pred == 1
        tp = int((positive & predicted).sum())
        fp, fn = int(predicted.sum()) - tp, int(positive.sum()) - tp
        for name, denominator in (("f1", 2 * tp + fp + fn), ("precision", tp + fp), ("recall", tp + fn)):
            scores[name].append((2 * tp if name == "f1" else tp) / denominator if denominator else 0.0)
    return {name: _mean(values) for name, values in scores.items()}


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _constant_scores(y: np.ndarray, scores: np.ndarray) -> bool:
    """Multi-label collapse: every label gets the same score for every image. (Thresholded predictions would
    flag any calibrated model of rare labels, which predicts all of them absent at 0.5.)"""
    columns = (_observed_column(y, scores, j)[1] for j in range(y.shape[1]))
    return all(s.size == 0 or np.ptp(s) <= 1e-6 for s in columns)


def _single_label_metrics(task: str, y: np.ndarray, scores: np.ndarray,
                          thresholds: np.ndarray | None) -> dict[str, float]:
    out: dict[str, float] = {}
    pred = scores.argmax(axis=1)
    out["accuracy"] = float(skm.accuracy_score(y, pred))
    out["balanced_accuracy"] = float(skm.balanced_accuracy_score(y, pred))
    n_classes = scores.shape[1]
    present = np.unique(y)
    if task == "binary" or n_classes == 2:
        out["auc"] = float(skm.roc_auc_score(y, scores[:, 1])) if len(present) == 2 else float("nan")
        out.update(_at_half_and_tuned(lambda t: _decision_means([(y, (scores[:, 1] >= t[0]).astype(int))]), 1,
                                      thresholds))
    else:
        if len(present) == n_classes:
            probs = scores / np.clip(scores.sum(axis=1, keepdims=True), 1e-12, None)
            out["auc"] = float(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"))
        else:
            out["auc"] = float("nan")
        out["f1"] = float(skm.f1_score(y, pred, average="macro", zero_division=0))
        out["precision"] = float(skm.precision_score(y, pred, average="macro", zero_division=0))
        out["recall"] = float(skm.recall_score(y, pred, average="macro", zero_division=0))
    out["collapsed"] = float(len(np.unique(pred)) == 1)
    # the confusion matrix as counts (true t, predicted p), from which SQL and the paper derive per-class recall
    counts = np.bincount(y * n_classes + pred, minlength=n_classes * n_classes)
    out.update({f"confusion_{t}_{q}": float(counts[t * n_classes + q]) for t in range(n_classes)
                for q in range(n_classes)})
    return out
