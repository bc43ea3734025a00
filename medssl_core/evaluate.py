"""Downstream evaluation: feature extraction, kNN, linear probe, the studies' heads, full fine-tuning.
Model selection uses validation only; test is scored once with the selected weights."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from medssl_core.config import Fit
from medssl_core.device import autocast
from medssl_core.features import knn_predict
from medssl_core.metrics import choose_thresholds, classification_metrics
from medssl_core.optim import build_optimizer, lr_factor, set_lr


class Classifier(nn.Module):
    """Optional backbone + head. A frozen backbone gets no gradient; its BatchNorm runs in train mode only
    if ``backbone_bn_train`` (SmallDataSSL's linear.py leaves the whole model in train mode)."""

    def __init__(self, backbone: nn.Module | None, head: nn.Module, *, train_backbone: bool = False,
                 backbone_bn_train: bool = False):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.train_backbone, self.backbone_bn_train = train_backbone, backbone_bn_train
        if backbone is not None and not train_backbone:
            backbone.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.backbone is not None and not self.train_backbone:
            self.backbone.train(mode and self.backbone_bn_train)
        return self

    def forward(self, x: Tensor) -> Tensor:
        if self.backbone is not None:
            with torch.set_grad_enabled(self.train_backbone and torch.is_grad_enabled()):
                x = self.backbone(x)
        return self.head(x.float())


FitConfig = Fit  # the 'fit' section of a fitted protocol's configuration


@dataclass
class FitResult:
    metrics: dict[str, dict[str, float]]  # split -> metrics
    curves: list[dict]
    best_epoch: int


def _scores(task: str, logits: Tensor) -> np.ndarray:
    return (torch.sigmoid(logits) if task == "multi-label" else torch.softmax(logits, dim=1)).float().cpu().numpy()


def _loss(task: str, logits: Tensor, y: Tensor) -> Tensor:
    if task == "multi-label":
        return F.binary_cross_entropy_with_logits(logits.float(), y.float())
    return F.cross_entropy(logits.float(), y)


@torch.no_grad()
def predict(model: Classifier, inputs: Tensor, prepare, task: str, device, bf16: bool, batch: int = 512):
    model.eval()
    out = []
    for i in range(0, inputs.shape[0], batch):
        with autocast(device, bf16):
            out.append(model(prepare(inputs[i:i + batch])).float())
    return _scores(task, torch.cat(out))


def fit_classifier(model: Classifier, data: dict[str, tuple[Tensor, Tensor]], task: str, cfg: FitConfig, *,
                   prepare, seed: int, device: torch.device, bf16: bool = False, progress: bool = False,
                   desc: str = "fit") -> FitResult:
    """Train on data['train'], select the epoch with the best validation ``select_metric``, score every split.

    ``data``: split -> (inputs, labels) on ``device``; inputs are features or uint8 images that ``prepare``
    turns into model input.
    """
    model.to(device)
    head_lr = cfg.optimizer.head_lr or cfg.optimizer.lr
    groups = [{"params": list(model.head.parameters()), "lr": head_lr}]
    if model.backbone is not None and model.train_backbone:
        groups.append({"params": list(model.backbone.parameters()),
                       "lr": cfg.optimizer.backbone_lr or cfg.optimizer.lr})
    optimizer = build_optimizer(groups, cfg.optimizer)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    x_train, y_train = data["train"]
    n = x_train.shape[0]
    # full batches only (BatchNorm in the heads), except for tiny label fractions where a partial batch is all
    steps = max(1, n // cfg.batch_size if n >= 2 * cfg.batch_size else -(-n // cfg.batch_size))
    best, best_state, best_epoch, curves = -float("inf"), copy.deepcopy(model.state_dict()), 0, []
    y_val_np = data["val"][1].cpu().numpy()
    for epoch in range(cfg.epochs):
        if cfg.reload_best_each_epoch and epoch > 0:
            model.load_state_dict(best_state)
        g = torch.Generator().manual_seed(seed * 7_919 + epoch)
        order = torch.randperm(n, generator=g).to(device)
        model.train()
        total = 0.0
        for step in tqdm(range(steps), desc=f"{desc} {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress):
            set_lr(optimizer, base_lrs, lr_factor(cfg.schedule, epoch, step, steps, cfg.epochs))
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            if idx.numel() < 2:
                continue  # BatchNorm in the head needs two samples
            with autocast(device, bf16):
                logits = model(prepare(x_train[idx]))
            loss = _loss(task, logits, y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
        val_scores = predict(model, data["val"][0], prepare, task, device, bf16)
        val = classification_metrics(task, y_val_np, val_scores)[cfg.select_metric]
        curves += [{"step": epoch + 1, "name": "train_loss", "value": total / steps},
                   {"step": epoch + 1, "name": f"val_{cfg.select_metric}", "value": val}]
        if val >= best:  # >=, as SmallDataSSL selects
            best, best_state, best_epoch = val, copy.deepcopy(model.state_dict()), epoch + 1
    model.load_state_dict(best_state)
    scores = {split: predict(model, x, prepare, task, device, bf16) for split, (x, _) in data.items()}
    thresholds = choose_thresholds(task, y_val_np, scores["val"])
    results = {split: classification_metrics(task, y.cpu().numpy(), scores[split], thresholds)
               for split, (_, y) in data.items()}
    return FitResult(results, curves, best_epoch)


def knn_evaluate(train_f: Tensor, train_y: Tensor, eval_sets: dict[str, tuple[Tensor, Tensor]], task: str, *,
                 k: int, metric: str, n_classes: int) -> dict[str, dict[str, float]]:
    out = {}
    for split, (f, y) in eval_sets.items():
        _, scores = knn_predict(train_f, train_y, f, k=k, metric=metric, n_classes=n_classes)
        out[split] = classification_metrics(task, y.cpu().numpy(), scores.cpu().numpy())
    return out
