"""Classification metrics from scores: accuracy, balanced accuracy, AUC, F1/precision/recall with thresholds
chosen on validation, and a collapse flag when a model predicts a single class."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn import metrics as skm


def choose_thresholds(task: str, y_val: np.ndarray, scores_val: np.ndarray) -> np.ndarray | None:
    """Per positive class (binary) or per label (multi-label): the threshold maximising F1 on validation."""
    if task == "binary":
        return np.array([_best_f1_threshold(y_val, scores_val[:, 1])])
    if task == "multi-label":
        return np.array([_best_f1_threshold(y_val[:, j], scores_val[:, j]) for j in range(y_val.shape[1])])
    return None


def _best_f1_threshold(y: np.ndarray, s: np.ndarray) -> float:
    if y.min() == y.max():
        return 0.5
    precision, recall, thresholds = skm.precision_recall_curve(y, s)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[np.argmax(f1[:-1])])


def classification_metrics(task: str, y: np.ndarray, scores: np.ndarray,
                           thresholds: np.ndarray | None = None) -> dict[str, float]:
    """``scores``: (N, C) class probabilities (multi-label: (N, L) per-label probabilities)."""
    y = np.asarray(y)
    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if task == "multi-label":
            aucs = [skm.roc_auc_score(y[:, j], scores[:, j]) for j in range(y.shape[1])
                    if 0 < y[:, j].sum() < len(y)]
            out["auc"] = float(np.mean(aucs)) if aucs else float("nan")
            for j in range(y.shape[1]):
                if 0 < y[:, j].sum() < len(y):
                    out[f"auc_label{j}"] = float(skm.roc_auc_score(y[:, j], scores[:, j]))
            t = thresholds if thresholds is not None else np.full(y.shape[1], 0.5)
            pred = (scores >= t).astype(int)
            out["f1"] = float(skm.f1_score(y, pred, average="macro", zero_division=0))
            out["precision"] = float(skm.precision_score(y, pred, average="macro", zero_division=0))
            out["recall"] = float(skm.recall_score(y, pred, average="macro", zero_division=0))
            out["accuracy"] = float((pred == y).mean())
            return out
        pred = scores.argmax(axis=1)
        out["accuracy"] = float(skm.accuracy_score(y, pred))
        out["balanced_accuracy"] = float(skm.balanced_accuracy_score(y, pred))
        n_classes = scores.shape[1]
        present = np.unique(y)
        if task == "binary" or n_classes == 2:
            out["auc"] = float(skm.roc_auc_score(y, scores[:, 1])) if len(present) == 2 else float("nan")
            t = float(thresholds[0]) if thresholds is not None else 0.5
            tpred = (scores[:, 1] >= t).astype(int)
            out["f1"] = float(skm.f1_score(y, tpred, zero_division=0))
            out["precision"] = float(skm.precision_score(y, tpred, zero_division=0))
            out["recall"] = float(skm.recall_score(y, tpred, zero_division=0))
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
    return out
