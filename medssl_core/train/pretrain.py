"""SSL pretraining loop for any registered method: on-device batched augmentation (masks follow images),
bf16 autocast and channels_last on CUDA, method hooks at step and epoch boundaries,
gradient clipping, atomic per-epoch checkpoints with exact resume (the global generators' states included), kNN
monitoring, non-finite loss stop."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from medssl_core.augment.views import BatchAugment
from medssl_core.common.atomic import atomic_file
from medssl_core.common.device import autocast
from medssl_core.common.errors import ConfigError, MedsslError
from medssl_core.common.seeding import restore_rng_states, rng_states
from medssl_core.config import Train
from medssl_core.data.batch import Batch
from medssl_core.evaluate.features import extract_features, knn_monitor_score
from medssl_core.methods import Method
from medssl_core.train.optim import build_optimizer, lr_factor, set_lr


class NonFiniteLossError(MedsslError):
    pass


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


def student_optimizer(method: Method, cfg: PretrainConfig, *, trainable_only: bool) -> torch.optim.Optimizer:
    """The optimiser over the method's student parameters; ``trainable_only``: those that now require gradients (a
    restart's)."""
    params = [p for p in method.student_parameters() if p.requires_grad or not trainable_only]
    return build_optimizer([{"params": params}], cfg.optimizer)


def pretrain(method: Method, data: Batch, augment: BatchAugment, cfg: PretrainConfig, *, seed: int,
             device: torch.device, bf16: bool, checkpoint: Path | None = None,
             monitor: tuple[Tensor, Tensor, Tensor, Tensor] | None = None, eval_augment: BatchAugment | None = None,
             progress: bool = True, desc: str = "pretrain", checkpoint_every_s: float = 0.0,
             keep_compiled: bool = False) -> PretrainResult:
    """Train ``method`` on ``data`` (uint8 images, and masks where present, already on ``device``).

    ``monitor`` = (train images, train labels, val images, val labels) for the per-epoch kNN accuracy; the
    best backbone (val kNN >= best, as SmallDataSSL) is kept besides the last one. ``checkpoint`` is written at
    the end of an epoch once ``checkpoint_every_s`` seconds have passed since the last write (0: every epoch):
    resuming gives the same numbers either way, and short epochs need not write the whole state each time.
    ``keep_compiled``: a captured step (``cfg.capture``) stays compiled for the next call on the same method (a
    benchmark's passes); otherwise it is released at the end.
    """
    n = len(data)
    if n < cfg.batch_size:
        raise ConfigError(f"{n} training images is fewer than one batch of {cfg.batch_size}; lower batch_size.")
    method.to(device)
    if augment.channels_last:
        method.to(memory_format=torch.channels_last)
    steps = n // cfg.batch_size  # drop_last: BN needs > 1 sample, and every step sees a full batch
    state = {"epoch": -1, "curves": [], "best_state": None, "best_epoch": -1, "best_knn": None}
    saved = (torch.load(checkpoint, map_location=device, weights_only=False)
             if checkpoint is not None and checkpoint.is_file() else None)
    if saved is not None:
        method.load_state_dict(saved["model"])
        state = saved["state"]
    method.on_fit_start(steps, cfg.epochs)
    restarts = method.optimizer_restarts()
    restarted = max((r for r in restarts if r <= state["epoch"]), default=None)
    if restarted is not None:  # the checkpoint holds the optimiser that restart built, over what trained from then
        method.on_epoch_start(restarted)
    optimizer = student_optimizer(method, cfg, trainable_only=restarted is not None)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        restore_rng_states(saved["rng"])  # last: what setting up drew does not shift what the epochs draw
    captured = None
    if cfg.capture != "off":  # imported here: eager runs do not depend on its code (plan/identity.py)
        from medssl_core.train.capture import captured_step, release_captured
        captured = captured_step(method, augment, cfg.capture, device, bf16)
    last_write = time.monotonic()
    try:
        for epoch in range(state["epoch"] + 1, cfg.epochs):
            g = epoch_generator(seed, epoch)
            host_order = torch.randperm(n, generator=g)
            order = host_order.to(device)
            method.train()
            method.on_epoch_start(epoch)
            if epoch in restarts:  # a fresh optimiser over what trains from now on (a resumed run rebuilds it alike)
                optimizer = student_optimizer(method, cfg, trainable_only=True)
            start = max((r for r in restarts if r <= epoch), default=0)  # the schedule runs from the last restart
            sums: dict[str, Tensor] = {}  # loss and its terms, summed on the device: no host sync per step
            losses_so_far = [c["value"] for c in state["curves"] if c["name"] == "loss"]
            last_loss = {"loss": f"{losses_so_far[-1]:.4f}"} if losses_so_far else None  # the previous epoch's
            bar = tqdm(range(steps), desc=f"{desc} {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress,
                       postfix=last_loss)
            for step in bar:
                set_lr(optimizer, base_lrs, lr_factor(cfg.schedule, epoch - start, step, steps, cfg.epochs - start))
                rows = slice(step * cfg.batch_size, (step + 1) * cfg.batch_size)
                batch = data.take(order[rows], host_order[rows])
                if captured is not None:
                    out = captured(batch, g)
                else:
                    views = augment.views(batch, g, method.n_views)
                    with autocast(device, bf16):
                        out = method.training_step(views, batch)
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(method.student_parameters(), cfg.grad_clip)
                optimizer.step()
                method.on_step_end(epoch, step)
                for name, value in {"loss": out.loss, **out.terms}.items():
                    sums[name] = sums.get(name, 0) + value.detach().float()
            means = {name: v.item() / steps for name, v in sums.items()}
            mean_loss = means["loss"]
            if not math.isfinite(mean_loss):  # checked once per epoch; the last good epoch's checkpoint is kept
                raise NonFiniteLossError(
                    f"{desc}: the loss became {mean_loss} in epoch {epoch + 1}. Lower the learning rate, enable "
                    "gradient clipping, or turn bf16 off (amp='off'); the last good checkpoint is kept and the run "
                    "is recorded as failed."
                )
            values = {**means, "lr": optimizer.param_groups[0]["lr"], **method.scheduled_values()}
            curves = [{"step": epoch + 1, "name": name, "value": v} for name, v in values.items()]
            if monitor is not None and cfg.monitor_every and ((epoch + 1) % cfg.monitor_every == 0
                                                              or epoch + 1 == cfg.epochs):
                acc = knn_score(method.backbone, monitor, eval_augment, cfg, device, bf16)
                curves.append({"step": epoch + 1, "name": f"knn_val_{monitor_metric(monitor[3])}", "value": acc})
                best = state["best_knn"]
                if best is None or (not math.isnan(acc) and (math.isnan(best) or acc >= best)):
                    state.update(best_knn=acc, best_epoch=epoch + 1,
                                 best_state=copy.deepcopy(method.backbone.state_dict()))
            state["curves"] += curves
            state["epoch"] = epoch
            due = time.monotonic() - last_write >= checkpoint_every_s
            if checkpoint is not None and epoch + 1 < cfg.epochs and due:
                last_write = time.monotonic()
                with atomic_file(checkpoint) as f:
                    torch.save({"model": method.state_dict(), "optimizer": optimizer.state_dict(), "state": state,
                                "rng": rng_states()}, f)
    finally:  # a CUDA graph's memory pool is not held through the evaluations that follow
        if captured is not None and not keep_compiled:
            release_captured()
    last = copy.deepcopy(method.backbone.state_dict())
    return PretrainResult(state["curves"], last, state["best_state"] or last,
                          state["best_epoch"] if state["best_state"] is not None else cfg.epochs,
                          state["best_knn"])


def monitor_metric(labels) -> str:
    """What the kNN monitor scores: 'auc' (mean per label) for multi-label labels (N, L), else 'accuracy'."""
    return "auc" if labels.ndim == 2 else "accuracy"


def knn_score(backbone: nn.Module, monitor, eval_augment, cfg: PretrainConfig, device, bf16) -> float:
    """Validation kNN accuracy (single-label) or mean AUC (multi-label) of the backbone's features."""
    train_x, train_y, val_x, val_y = monitor
    ftr = extract_features(backbone, train_x, eval_augment, device=device, bf16=bf16)
    fva = extract_features(backbone, val_x, eval_augment, device=device, bf16=bf16)
    return knn_monitor_score(ftr, train_y, fva, val_y, k=cfg.knn_k, metric=cfg.knn_metric)
