"""SSL pretraining loop: on-device batched two-view augmentation, bf16 autocast and channels_last on CUDA,
gradient clipping, atomic per-epoch checkpoints with exact resume, kNN monitoring, non-finite loss stop."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from medssl_core import losses
from medssl_core.atomic import atomic_file
from medssl_core.augment import BatchAugment
from medssl_core.config import Train
from medssl_core.device import autocast
from medssl_core.errors import ConfigError, MedsslError
from medssl_core.features import extract_features, knn_predict
from medssl_core.optim import build_optimizer, lr_factor, set_lr


class NonFiniteLossError(MedsslError):
    pass


def objective(name: str, kwargs: dict) -> Callable:
    """Adapt a pure loss to the model outputs (h, z, p) of the two views."""
    if name not in losses.LOSSES:
        raise ConfigError(f"Unknown loss {name!r}; known: {sorted(losses.LOSSES)}")
    fn = losses.LOSSES[name]
    if name == "simsiam":
        return lambda o0, o1: fn(o0[2], o1[2], o0[1], o1[1], **kwargs)
    return lambda o0, o1: fn(o0[1], o1[1], **kwargs)


PretrainConfig = Train  # the 'train' section of a pretraining's configuration


@dataclass
class PretrainResult:
    curves: list[dict]
    last_state: dict
    best_state: dict
    best_epoch: int
    best_knn_val: float | None


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """Each epoch draws its order and augmentations from its own generator: a resumed run equals an
    uninterrupted one."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def pretrain(model: nn.Module, loss_fn: Callable, images: Tensor, augment: BatchAugment, cfg: PretrainConfig, *,
             seed: int, device: torch.device, bf16: bool, checkpoint: Path | None = None,
             monitor: tuple[Tensor, Tensor, Tensor, Tensor] | None = None, eval_augment: BatchAugment | None = None,
             progress: bool = True, desc: str = "pretrain") -> PretrainResult:
    """Train ``model`` (an SSLModel) on uint8 ``images`` (N, C, H, W) already on ``device``.

    ``monitor`` = (train images, train labels, val images, val labels) for the per-epoch kNN accuracy; the
    best backbone (val kNN >= best, as SmallDataSSL) is kept besides the last one.
    """
    n = images.shape[0]
    if n < cfg.batch_size:
        raise ConfigError(f"{n} training images is fewer than one batch of {cfg.batch_size}; lower batch_size.")
    model.to(device)
    if augment.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg.optimizer)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    steps = n // cfg.batch_size  # drop_last: BN needs > 1 sample, and every step sees a full batch
    state = {"epoch": -1, "curves": [], "best_state": None, "best_epoch": -1, "best_knn": None}
    if checkpoint is not None and checkpoint.is_file():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
    for epoch in range(state["epoch"] + 1, cfg.epochs):
        g = epoch_generator(seed, epoch)
        order = torch.randperm(n, generator=g).to(device)
        model.train()
        total, count = 0.0, 0
        bar = tqdm(range(steps), desc=f"{desc} {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress)
        for step in bar:
            set_lr(optimizer, base_lrs, lr_factor(cfg.schedule, epoch, step, steps, cfg.epochs))
            batch = images[order[step * cfg.batch_size:(step + 1) * cfg.batch_size]]
            v0, v1 = augment.two_views(batch, g)
            with autocast(device, bf16):
                loss = loss_fn(model(v0), model(v1))
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"{desc}: the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}. Lower the "
                    "learning rate, enable gradient clipping, or turn bf16 off (amp='off'); the last good "
                    "checkpoint is kept and the run is recorded as failed."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            total += loss.item()
            count += 1
            bar.set_postfix(loss=f"{total / count:.4f}")
        curves = [{"step": epoch + 1, "name": "loss", "value": total / count},
                  {"step": epoch + 1, "name": "lr", "value": optimizer.param_groups[0]["lr"]}]
        if monitor is not None and cfg.monitor_every and ((epoch + 1) % cfg.monitor_every == 0
                                                          or epoch + 1 == cfg.epochs):
            acc = knn_accuracy(model.backbone, monitor, eval_augment, cfg, device, bf16)
            curves.append({"step": epoch + 1, "name": "knn_val_acc", "value": acc})
            if state["best_knn"] is None or acc >= state["best_knn"]:
                state.update(best_knn=acc, best_epoch=epoch + 1,
                             best_state=copy.deepcopy(model.backbone.state_dict()))
        state["curves"] += curves
        state["epoch"] = epoch
        if checkpoint is not None:
            with atomic_file(checkpoint) as f:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state}, f)
    last = copy.deepcopy(model.backbone.state_dict())
    return PretrainResult(state["curves"], last, state["best_state"] or last,
                          state["best_epoch"] if state["best_state"] is not None else cfg.epochs,
                          state["best_knn"])


def knn_accuracy(backbone: nn.Module, monitor, eval_augment, cfg: PretrainConfig, device, bf16) -> float:
    train_x, train_y, val_x, val_y = monitor
    ftr = extract_features(backbone, train_x, eval_augment, device=device, bf16=bf16)
    fva = extract_features(backbone, val_x, eval_augment, device=device, bf16=bf16)
    pred, _ = knn_predict(ftr, train_y, fva, k=cfg.knn_k, metric=cfg.knn_metric)
    return (pred == val_y.to(pred.device)).float().mean().item()
