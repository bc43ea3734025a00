"""Optimisers and learning-rate schedules the studies use, built from plain dicts."""

from __future__ import annotations

import math

import torch
from torch import nn

from medssl_core.errors import ConfigError


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


def build_optimizer(groups: list[dict] | nn.Module, cfg: dict) -> torch.optim.Optimizer:
    """cfg: {'name': sgd|adam|adamw|lars, 'lr', 'momentum', 'weight_decay', 'betas'}. ``groups`` may carry
    their own 'lr'."""
    params = groups.parameters() if isinstance(groups, nn.Module) else groups
    name = cfg.get("name", "sgd").lower()
    lr, wd = cfg["lr"], cfg.get("weight_decay", 0.0)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.get("momentum", 0.0), weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, betas=tuple(cfg.get("betas", (0.9, 0.999))))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=tuple(cfg.get("betas", (0.9, 0.999))))
    if name == "lars":
        return LARS(params, lr=lr, momentum=cfg.get("momentum", 0.9), weight_decay=wd)
    raise ConfigError(f"Unknown optimiser {name!r}; use sgd, adam, adamw or lars.")


def lr_factor(cfg: dict, epoch: int, step_in_epoch: int, steps_per_epoch: int, epochs: int) -> float:
    """Multiplier of the base lr. cfg: {'name': none|step|cosine|warmup_cosine, 'step_size', 'gamma',
    'start_epoch' (step: decays count only epochs after it, SmallDataSSL's `if epoch > 25`), 'warmup_epochs'}."""
    name = cfg.get("name", "none")
    t = epoch + step_in_epoch / max(1, steps_per_epoch)
    if name == "none":
        return 1.0
    if name == "step":
        start = cfg.get("start_epoch", 0)
        return cfg.get("gamma", 0.1) ** (max(0, epoch - start) // cfg["step_size"])
    if name in ("cosine", "warmup_cosine"):
        warm = cfg.get("warmup_epochs", 0) if name == "warmup_cosine" else 0
        if t < warm:
            return (t + 1 / max(1, steps_per_epoch)) / warm
        span = max(1e-9, epochs - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (t - warm) / span)))
    raise ConfigError(f"Unknown schedule {name!r}; use none, step, cosine or warmup_cosine.")


def set_lr(optimizer: torch.optim.Optimizer, base_lrs: list[float], factor: float) -> None:
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["lr"] = base * factor
