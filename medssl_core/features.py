"""Backbone features of uint8 images, and the kNN vote on them (used by the pretraining monitor and the kNN
protocol alike)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medssl_core.augment import BatchAugment
from medssl_core.device import autocast


@torch.no_grad()
def extract_features(backbone: nn.Module, images: Tensor, eval_augment: BatchAugment, *, device: torch.device,
                     bf16: bool = False, batch_size: int = 512) -> Tensor:
    """Backbone features (float32, on ``device``) of uint8 images, backbone in eval mode."""
    was_training = backbone.training
    backbone.eval()
    g = torch.Generator()
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = eval_augment(images[i:i + batch_size].to(device), g)
        with autocast(device, bf16):
            out.append(backbone(x).float())
    backbone.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def knn_predict(train_f: Tensor, train_y: Tensor, query_f: Tensor, *, k: int = 200, metric: str = "euclidean",
                n_classes: int | None = None, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """Majority vote of the k nearest training features (sklearn KNeighborsClassifier, uniform weights).

    Returns (predicted labels, vote fractions (N, C) usable as scores). Ties go to the lowest class index.
    """
    train_y = train_y.to(train_f.device).long()
    n_classes = n_classes or int(train_y.max().item()) + 1
    k = min(k, train_f.shape[0])
    if metric == "cosine":
        train_f, query_f = F.normalize(train_f, dim=1), F.normalize(query_f, dim=1)
    elif metric != "euclidean":
        raise ValueError(f"knn metric must be 'euclidean' or 'cosine', not {metric!r}")
    votes = []
    for i in range(0, query_f.shape[0], chunk):
        q = query_f[i:i + chunk]
        d = torch.cdist(q, train_f) if metric == "euclidean" else -(q @ train_f.T)
        idx = d.topk(k, dim=1, largest=False).indices
        votes.append(F.one_hot(train_y[idx], n_classes).sum(dim=1).float() / k)
    scores = torch.cat(votes)
    return scores.argmax(dim=1), scores
