"""Probes and fine-tuning: a classifier (optional backbone + head) fitted on the training images, selected on
validation only (a metric or the loss, with early stopping), test scored once with the selected weights."""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from medssl_core.common.device import autocast
from medssl_core.common.errors import ConfigError
from medssl_core.config import Fit, FitLoss
from medssl_core.data.labels import MULTI_LABEL, default_fit_loss, headline_metric
from medssl_core.evaluate.metrics import choose_thresholds, classification_metrics
from medssl_core.losses.classification import (
    binary_cross_entropy_loss,
    cross_entropy_loss,
    double_softmax_cross_entropy_loss,
    focal_loss,
)
from medssl_core.train.optim import Plateau, build_optimizer, lr_factor, set_lr


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

    def freeze_backbone(self, frozen: bool) -> None:
        """Freeze (no gradient, BatchNorm as for a frozen backbone) or unfreeze a backbone that trains."""
        self.train_backbone = not frozen
        self.backbone.requires_grad_(not frozen)

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
    best_epoch: int  # the epoch validation selected
    last_epoch: int  # the last epoch trained (early stopping may end before cfg.epochs)
    scores: dict[str, np.ndarray]  # split -> the scored model's probabilities (ROC curves are drawn from them)


def _scores(task: str, logits: Tensor) -> np.ndarray:
    return (torch.sigmoid(logits) if task == MULTI_LABEL else torch.softmax(logits, dim=1)).float().cpu().numpy()


def fit_loss(task: str, cfg: FitLoss) -> Callable[[Tensor, Tensor], Tensor]:
    """The configured loss as a function of (logits, labels); ``cfg.name`` unset: the task's default."""
    name = cfg.name or default_fit_loss(task)
    if cfg.double_softmax:
        if name != "ce":
            raise ConfigError(f"double_softmax is a softmax head trained with cross-entropy; loss {name!r} has "
                              "no such form: use name 'ce' or drop double_softmax.")
        return functools.partial(double_softmax_cross_entropy_loss, label_smoothing=cfg.label_smoothing)
    if name == "focal":
        return functools.partial(focal_loss, gamma=cfg.focal_gamma, alpha=cfg.focal_alpha,
                                 label_smoothing=cfg.label_smoothing)
    if (name == "bce") != (task == MULTI_LABEL):
        raise ConfigError(f"loss {name!r} does not suit a {task} task: use 'bce' or 'focal' for multi-label, "
                          "'ce' or 'focal' otherwise.")
    fn = binary_cross_entropy_loss if name == "bce" else cross_entropy_loss
    return functools.partial(fn, label_smoothing=cfg.label_smoothing)


@torch.no_grad()
def predict_logits(model: Classifier, inputs: Tensor, prepare, device, bf16: bool, batch: int = 512) -> Tensor:
    model.eval()
    out = []
    for i in range(0, inputs.shape[0], batch):
        with autocast(device, bf16):
            out.append(model(prepare(inputs[i:i + batch])).float())
    return torch.cat(out)


def predict(model: Classifier, inputs: Tensor, prepare, task: str, device, bf16: bool) -> np.ndarray:
    return _scores(task, predict_logits(model, inputs, prepare, device, bf16))


def fit_classifier(model: Classifier, data: dict[str, tuple[Tensor, Tensor]], task: str, cfg: FitConfig, *,
                   prepare, seed: int, device: torch.device, bf16: bool = False, progress: bool = False,
                   desc: str = "fit", augment_train=None) -> FitResult:
    """Train on data['train'], select the epoch with the best validation ``select_metric`` (the lowest loss
    for 'loss'), score every split with the selected weights.

    ``data``: split -> (inputs, labels) on ``device``; inputs are features or uint8 images that ``prepare``
    turns into model input, and ``augment_train`` (if given) into augmented model input for training.
    ``cfg.freeze_backbone_epochs``: a trained backbone is frozen for those first epochs; ``cfg.early_stopping``:
    training stops after that many epochs without a better validation value.
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
    # 'drop': full batches only (BatchNorm in the heads), except for tiny label fractions where a partial batch is
    # all; 'keep': the last partial batch too, as a DataLoader without drop_last (a batch of one is skipped below)
    steps = max(1, n // cfg.batch_size if n >= 2 * cfg.batch_size and cfg.last_batch == "drop"
                else -(-n // cfg.batch_size))
    best, best_state, best_epoch, curves = -float("inf"), copy.deepcopy(model.state_dict()), 0, []
    y_val = data["val"][1]
    y_val_np = y_val.cpu().numpy()
    select_metric = cfg.select_metric or headline_metric(task)
    loss_fn = fit_loss(task, cfg.loss)
    train_input = augment_train or prepare
    since_best = 0
    plateau = Plateau(cfg.schedule.gamma, cfg.schedule.plateau_patience, "min" if select_metric == "loss" else "max")
    for epoch in range(cfg.epochs):
        if cfg.reload_best_each_epoch and epoch > 0:
            model.load_state_dict(best_state)
        if cfg.freeze_backbone_epochs and epoch in (0, cfg.freeze_backbone_epochs):
            model.freeze_backbone(epoch < cfg.freeze_backbone_epochs)
        g = torch.Generator().manual_seed(seed * 7_919 + epoch)
        order = torch.randperm(n, generator=g).to(device)
        model.train()
        total = torch.zeros((), device=device)  # on the device: no host sync per step
        for step in tqdm(range(steps), desc=f"{desc} {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress):
            set_lr(optimizer, base_lrs, lr_factor(cfg.schedule, epoch, step, steps, cfg.epochs) * plateau.scale)
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            if idx.numel() < 2:
                continue  # BatchNorm in the head needs two samples
            with autocast(device, bf16):
                logits = model(train_input(x_train[idx]))
            loss = loss_fn(logits, y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        val_logits = predict_logits(model, data["val"][0], prepare, device, bf16)
        val_loss = float(loss_fn(val_logits, y_val.to(val_logits.device)))
        curves += [{"step": epoch + 1, "name": "train_loss", "value": total.item() / steps},
                   {"step": epoch + 1, "name": "val_loss", "value": val_loss}]
        if select_metric == "loss":
            val = -val_loss  # higher is better below
        else:
            val = _selection_value(classification_metrics(task, y_val_np, _scores(task, val_logits)), select_metric)
            curves.append({"step": epoch + 1, "name": f"val_{select_metric}", "value": val})
        if cfg.schedule.name == "plateau":
            plateau.step(val_loss if select_metric == "loss" else val)
            curves.append({"step": epoch + 1, "name": "lr", "value": optimizer.param_groups[0]["lr"]})
        # ties: the later epoch wins as SmallDataSSL selects (>=), the earlier under select_ties 'earlier' (>).
        # A NaN (e.g. no label with both classes in val) is neither an improvement nor a reason to stop; while no
        # epoch has been scorable, the last one's weights are kept rather than the untrained weights
        if math.isnan(val):
            if best == -float("inf"):
                best_state, best_epoch = copy.deepcopy(model.state_dict()), epoch + 1
        elif val >= best if cfg.select_ties == "later" else val > best:
            best, best_state, best_epoch, since_best = val, copy.deepcopy(model.state_dict()), epoch + 1, 0
        else:
            since_best += 1
            if cfg.early_stopping is not None and since_best >= cfg.early_stopping:
                break
    if cfg.scored == "selected":
        model.load_state_dict(best_state)  # else the last epoch's weights; best_epoch says what val preferred
    scores = {split: predict(model, x, prepare, task, device, bf16) for split, (x, _) in data.items()}
    chooser = cfg.thresholds_on  # 'test': thresholds tuned on the very labels they are scored on (optimistic F1)
    thresholds = choose_thresholds(task, data[chooser][1].cpu().numpy(), scores[chooser])
    results = {split: classification_metrics(task, y.cpu().numpy(), scores[split], thresholds)
               for split, (_, y) in data.items()}
    return FitResult(results, curves, best_epoch, epoch + 1, scores)


def _selection_value(metrics: dict[str, float], select_metric: str) -> float:
    if select_metric not in metrics:
        raise ConfigError(f"select_metric {select_metric!r} is not a metric of this task; its metrics: "
                          f"{', '.join(sorted(metrics))}. Multi-label tasks select by 'auc' (the default).")
    return metrics[select_metric]
