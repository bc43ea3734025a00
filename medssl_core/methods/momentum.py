"""EMA teachers: the update rule every method with a teacher uses, and :class:`MomentumMethod` (a teacher backbone
and projector on BYOL's cosine momentum schedule)."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from medssl_core.methods.base import Method


@torch.no_grad()
def ema_update(pairs: Iterable[tuple[nn.Module, nn.Module]], momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student for each (student, teacher) pair's parameters; the
    teacher's buffers (BatchNorm statistics) are copied."""
    for student, teacher in pairs:
        for ps, pt in zip(student.parameters(), teacher.parameters(), strict=True):
            pt.lerp_(ps.detach(), 1 - momentum)
        for bs, bt in zip(student.buffers(), teacher.buffers(), strict=True):
            bt.copy_(bs)


class MomentumOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    momentum_base: float = Field(0.99, ge=0, le=1)  # BYOL: tau_base 0.99 (0.996 at batch 4096)
    momentum_final: float = Field(1.0, ge=0, le=1)


class MomentumMethod(Method):
    """A student and an EMA teacher (backbone + projector) whose momentum follows BYOL's cosine schedule
    tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2, from ``momentum_base`` to ``momentum_final``."""

    Options = MomentumOptions
    teachers = ("teacher_backbone", "teacher_projector")

    def __init__(self, cfg, backbone, feature_dim: int, image_size: int = 224, image_channels: int = 1):
        super().__init__(cfg, backbone, feature_dim, image_size, image_channels)
        self.teacher_backbone = copy.deepcopy(self.backbone).requires_grad_(False)
        self.teacher_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.momentum = self.options.momentum_base

    @torch.no_grad()
    def teacher_embed(self, x: Tensor) -> Tensor:
        return self.teacher_projector(self.teacher_backbone(x))

    @torch.no_grad()
    def on_step_end(self, epoch: int, step: int) -> None:
        o = self.options
        k = self.progress(epoch, step)
        self.momentum = o.momentum_final - (o.momentum_final - o.momentum_base) * (1 + math.cos(math.pi * k)) / 2
        ema_update(((self.backbone, self.teacher_backbone), (self.projector, self.teacher_projector)), self.momentum)
