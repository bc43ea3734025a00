"""kNN evaluation of frozen features: the votes of the nearest training features, scored on each split."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from medssl_core.common.errors import ConfigError
from medssl_core.data.labels import MULTI_LABEL
from medssl_core.evaluate.features import knn_predict
from medssl_core.evaluate.metrics import choose_thresholds, classification_metrics


def knn_evaluate(train_f: Tensor, train_y: Tensor, eval_sets: dict[str, tuple[Tensor, Tensor]], task: str, *,
                 k: int, metric: str, n_classes: int) -> dict[str, dict[str, float]]:
    """kNN scores of each split against the training features, single- or multi-label (``n_classes``: classes,
    or labels for multi-label). F1 thresholds come from 'val' when it is among the splits, as in fit_classifier."""
    labels = {split: y.cpu().numpy() for split, (_, y) in eval_sets.items()}
    scores = {split: knn_predict(train_f, train_y, f, k=k, metric=metric, n_classes=n_classes)[1].cpu().numpy()
              for split, (f, _) in eval_sets.items()}
    _check_width(task, scores, n_classes)
    thresholds = choose_thresholds(task, labels["val"], scores["val"]) if "val" in labels else None
    return {split: classification_metrics(task, labels[split], scores[split], thresholds) for split in eval_sets}


def _check_width(task: str, scores: dict[str, np.ndarray], n_classes: int) -> None:
    width = next(iter(scores.values())).shape[1] if scores else n_classes
    if task == MULTI_LABEL and width != n_classes:
        raise ConfigError(f"the training labels have {width} columns but n_classes is {n_classes}: a multi-label "
                          "task's n_classes is its number of labels; fix the dataset's registry entry.")
