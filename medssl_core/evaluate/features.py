"""Backbone features of uint8 images, and the kNN vote on them, single- or multi-label (used by the pretraining
monitor and the kNN protocol alike)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from medssl_core.augment.views import BatchAugment
from medssl_core.common.device import autocast
from medssl_core.data.labels import is_multilabel, observed_mask


def slow_progress(steps: Iterable, desc: str) -> tqdm:
    """A bar that appears only on a terminal and only once the loop has taken a few seconds (a large set on a CPU)."""
    return tqdm(steps, desc=desc, leave=False, delay=5, disable=None)


@torch.no_grad()
def extract_features(backbone: nn.Module, images: Tensor, eval_augment: BatchAugment, *, device: torch.device,
                     bf16: bool = False, batch_size: int = 512) -> Tensor:
    """Backbone features (float32, on ``device``) of uint8 images, backbone in eval mode."""
    was_training = backbone.training
    backbone.eval()
    g = torch.Generator()
    out = []
    for i in slow_progress(range(0, images.shape[0], batch_size), "features"):
        x = eval_augment(images[i:i + batch_size].to(device), g)
        with autocast(device, bf16):
            out.append(backbone(x).float())
    backbone.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def knn_predict(train_f: Tensor, train_y: Tensor, query_f: Tensor, *, k: int = 200, metric: str = "euclidean",
                n_classes: int | None = None, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """Vote of the k nearest training features (sklearn KNeighborsClassifier, uniform weights).

    Single-label ``train_y`` (N,): returns (predicted classes, vote fractions (Q, C) usable as scores); ties go to
    the lowest class index; training images whose label is MISSING are left out. Multi-label ``train_y`` (N, L):
    see ``_multilabel_votes``; predictions are scores > 0.5 (a tie is negative, like the lowest-index rule).
    """
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"knn metric must be 'euclidean' or 'cosine', not {metric!r}")
    if train_y.shape[0] != train_f.shape[0]:
        raise ValueError(f"{train_f.shape[0]} training features but {train_y.shape[0]} labels")
    train_y = train_y.to(train_f.device).long()
    if is_multilabel(train_y):
        scores = _multilabel_votes(train_f, train_y, query_f, k, metric, chunk)
        return (scores > 0.5).long(), scores
    known = observed_mask(train_y)
    if not known.all():
        train_f, train_y = train_f[known], train_y[known]
    n_classes = n_classes or int(train_y.max().item()) + 1
    k = min(k, train_f.shape[0])
    votes = [F.one_hot(train_y[idx], n_classes).sum(dim=1).float() / k
             for idx in _neighbours(train_f, query_f, k, metric, chunk)]
    scores = torch.cat(votes)
    return scores.argmax(dim=1), scores


def _neighbours(train_f: Tensor, query_f: Tensor, k: int, metric: str, chunk: int) -> Iterator[Tensor]:
    """Indices (chunk, k) of each query's k nearest training features, chunk by chunk."""
    if metric == "cosine":
        train_f, query_f = F.normalize(train_f, dim=1), F.normalize(query_f, dim=1)
    for i in slow_progress(range(0, query_f.shape[0], chunk), "kNN"):
        q = query_f[i:i + chunk]
        d = torch.cdist(q, train_f) if metric == "euclidean" else -(q @ train_f.T)
        yield d.topk(k, dim=1, largest=False).indices


def _multilabel_votes(train_f: Tensor, train_y: Tensor, query_f: Tensor, k: int, metric: str,
                      chunk: int) -> Tensor:
    """Per label, the positive fraction among the k neighbours that observed it (a neighbour whose label is
    MISSING does not vote). When none of them did, the label's prior (its positive fraction among the observed
    training labels, 0.5 if none): it carries no information about the query, and unlike a fixed 0.5 it does
    not rank such queries above informed ones of a rare label. Training images with no observed label are left
    out, as single-label ones with a MISSING label are: they would take a neighbour's place without a vote."""
    labelled = observed_mask(train_y).any(dim=1)
    if not labelled.all():
        train_f, train_y = train_f[labelled], train_y[labelled]
    known = observed_mask(train_y)
    k = min(k, train_f.shape[0])
    positive = (train_y == 1) & known
    prior = torch.where(known.any(0), positive.sum(0) / known.sum(0).clamp_min(1), 0.5)
    scores = []
    for idx in _neighbours(train_f, query_f, k, metric, chunk):
        n_pos, n_known = positive[idx].sum(dim=1), known[idx].sum(dim=1)
        scores.append(torch.where(n_known > 0, n_pos / n_known.clamp_min(1), prior))
    return torch.cat(scores).float()


@torch.no_grad()
def knn_monitor_score(train_f: Tensor, train_y: Tensor, val_f: Tensor, val_y: Tensor, *, k: int = 200,
                      metric: str = "euclidean") -> float:
    """The pretraining monitor's kNN score on val, for any task: accuracy for single-label labels (N,), mean
    per-label ROC-AUC for multi-label labels (N, L) (accuracy per label rewards predicting every label absent).
    MISSING labels are left out; NaN when no val label is scorable."""
    pred, scores = knn_predict(train_f, train_y, val_f, k=k, metric=metric)
    val_y = val_y.to(pred.device)
    if is_multilabel(val_y):
        return mean_roc_auc(scores, val_y)
    known = observed_mask(val_y)
    return (pred[known] == val_y[known]).float().mean().item()


def mean_roc_auc(scores: Tensor, y: Tensor) -> float:
    """Mean over labels of the ROC-AUC of ``scores`` (N, L) against 0/1 labels ``y`` (N, L), each label on its
    observed entries; labels without both classes observed are skipped (NaN if none is left). In torch, not
    sklearn: the pretraining's monitor uses it, and metrics.py is evaluation code (see identity.py)."""
    aucs = []
    for j in range(y.shape[1]):
        known = observed_mask(y[:, j])
        auc = _roc_auc(scores[known, j].double(), y[known, j] == 1)
        if auc is not None:
            aucs.append(auc)
    return float(torch.stack(aucs).mean()) if aucs else float("nan")


def _roc_auc(s: Tensor, positive: Tensor) -> Tensor | None:
    """Mann-Whitney U / (n_pos n_neg) with average ranks for ties (= sklearn's roc_auc_score)."""
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    sorted_s, order = s.sort()
    _, group, counts = torch.unique_consecutive(sorted_s, return_inverse=True, return_counts=True)
    mean_rank = counts.cumsum(0).double() - (counts.double() - 1) / 2  # 1-based average rank of each tie group
    rank_sum = mean_rank[group][positive[order]].sum()
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
