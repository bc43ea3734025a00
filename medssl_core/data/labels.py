"""The label conventions every module shares. Labels are int64: (N,) class indices for single-label tasks,
(N, L) 0/1 per label for multi-label tasks, where ``MISSING`` marks a label that is unknown or uncertain
(CheXpert's -1 under the U-ignore policy, or a blank) and is left out of every loss, vote and metric."""

from __future__ import annotations

import numpy as np
import torch

MISSING = -1
MULTI_LABEL = "multi-label"


def observed_mask(y: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """True where a label is known (same type and shape as ``y``)."""
    return y != MISSING


def is_multilabel(y: np.ndarray | torch.Tensor) -> bool:
    """Multi-label labels are (N, L); single-label ones are (N,)."""
    return y.ndim == 2


def headline_metric(task: str) -> str:
    """The metric a task selects and reports by: mean per-label ROC-AUC for multi-label (per-label accuracy
    rewards predicting every label absent: ~0.95 on ChestMNIST), accuracy otherwise."""
    return "auc" if task == MULTI_LABEL else "accuracy"


def default_fit_loss(task: str) -> str:
    """Sigmoid BCE per label for multi-label, softmax cross-entropy otherwise."""
    return "bce" if task == MULTI_LABEL else "ce"
