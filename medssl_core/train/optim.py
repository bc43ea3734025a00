"""Optimisers and learning-rate schedules the studies use, built from their typed configurations."""

from __future__ import annotations

import math

import torch
from torch import nn

from medssl_core.config import Optimizer, Schedule, parse


class LARS(torch.optim.Optimizer):
    """LARS (You et al. 2017) as in the Barlow Twins / VICReg official code: SGD with momentum whose update
    is scaled per tensor by eta * ||w|| / ||g||; biases and BN parameters (1-D) are excluded from weight
    decay and adaptation."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 1e-6, eta: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if p.ndim > 1:
                    d = d.add(p, alpha=group["weight_decay"])
                    pn, dn = torch.norm(p), torch.norm(d)
                    q = torch.where((pn > 0) & (dn > 0), group["eta"] * pn / dn, torch.ones_like(pn))
                    d = d.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"].mul_(group["momentum"]).add_(d)
                p.add_(mu, alpha=-group["lr"])
        return loss


def build_optimizer(groups: list[dict] | nn.Module, cfg: Optimizer | dict) -> torch.optim.Optimizer:
    """``groups`` may carry their own 'lr'."""
    cfg = parse(Optimizer, cfg, "optimizer")
    params = groups.parameters() if isinstance(groups, nn.Module) else groups
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    return LARS(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(cfg: Schedule | dict, epoch: int, step_in_epoch: int, steps_per_epoch: int, epochs: int) -> float:
    """Multiplier of the base lr at a step. 'step' counts only the scheduler steps taken after 0-based epochs
    > start_epoch, as SmallDataSSL's `if epoch > 25: scheduler.step()` (its lr halves after epochs 51, 76, 101)."""
    cfg = parse(Schedule, cfg, "schedule")
    t = epoch + step_in_epoch / max(1, steps_per_epoch)
    if cfg.name in ("none", "plateau"):  # plateau: a multiplier the fitting loop keeps (Plateau)
        return 1.0
    if cfg.name == "step":
        return cfg.gamma ** (max(0, epoch - cfg.start_epoch - 1) // cfg.step_size)
    if cfg.name == "multistep":  # MultiStepLR stepped after each epoch (the MedMNIST baselines: 50 and 75 of 100)
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.name == "onecycle":
        return _one_cycle(cfg, epoch * steps_per_epoch + step_in_epoch, epochs * steps_per_epoch)
    warm = cfg.warmup_epochs if cfg.name == "warmup_cosine" else 0
    if t < warm:
        return (t + 1 / max(1, steps_per_epoch)) / warm
    span = max(1e-9, epochs - warm)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (t - warm) / span)))


def _one_cycle(cfg: Schedule, t: int, total: int) -> float:
    """torch's OneCycleLR (two phases, cosine) at step t, as a fraction of the peak lr."""
    initial = 1 / cfg.div_factor
    low = initial / cfg.final_div_factor
    end_up = float(cfg.pct_start * total) - 1
    if t <= end_up:
        start, end, pct = initial, 1.0, t / end_up
    else:
        start, end, pct = 1.0, low, (t - end_up) / (total - 1 - end_up)
    return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)


def set_lr(optimizer: torch.optim.Optimizer, base_lrs: list[float], factor: float) -> None:
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["lr"] = base * factor


class Plateau:
    """torch's ReduceLROnPlateau (relative threshold 1e-4, no cooldown, no minimum lr) as an lr multiplier:
    after more than ``patience`` epochs without a better value, the multiplier is scaled by ``factor``."""

    def __init__(self, factor: float, patience: int, mode: str = "max", threshold: float = 1e-4):
        self.factor, self.patience, self.mode, self.threshold = factor, patience, mode, threshold
        self.best = -math.inf if mode == "max" else math.inf
        self.bad_epochs, self.scale = 0, 1.0

    def step(self, value: float) -> None:
        better = (value > self.best * (1 + self.threshold) if self.mode == "max"
                  else value < self.best * (1 - self.threshold))
        if better:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.scale *= self.factor
            self.bad_epochs = 0
