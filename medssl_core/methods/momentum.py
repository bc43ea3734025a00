"""The SSL methods the studies use, each saying only what differs from :class:`Method`."""

from __future__ import annotations

import copy
import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from medssl_core.methods.base import Method


class MomentumOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    momentum_base: float = Field(0.99, ge=0, le=1)  # BYOL: tau_base 0.99 (0.996 at batch 4096)
    momentum_final: float = Field(1.0, ge=0, le=1)


class MomentumMethod(Method):
    """A student and an EMA teacher (backbone + projector) whose momentum follows BYOL's cosine schedule
    tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2, from ``momentum_base`` to ``momentum_final``."""

    Options = MomentumOptions

    def __init__(self, cfg, backbone, feature_dim: int, image_size: int = 224, image_channels: int = 1):
        super().__init__(cfg, backbone, feature_dim, image_size, image_channels)
        self.teacher_backbone = copy.deepcopy(self.backbone).requires_grad_(False)
        self.teacher_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.momentum = self.options.momentum_base

    def student_parameters(self):
        teacher = {id(p) for p in (*self.teacher_backbone.parameters(), *self.teacher_projector.parameters())}
        return (p for p in self.parameters() if id(p) not in teacher)

    @torch.no_grad()
    def teacher_embed(self, x: Tensor) -> Tensor:
        return self.teacher_projector(self.teacher_backbone(x))

    @torch.no_grad()
    def on_step_end(self, epoch: int, step: int) -> None:
        o = self.options
        k = self.progress(epoch, step)
        self.momentum = o.momentum_final - (o.momentum_final - o.momentum_base) * (1 + math.cos(math.pi * k)) / 2
        for student, teacher in ((self.backbone, self.teacher_backbone), (self.projector, self.teacher_projector)):
            for ps, pt in zip(student.parameters(), teacher.parameters(), strict=True):
                pt.lerp_(ps.detach(), 1 - self.momentum)
            for bs, bt in zip(student.buffers(), teacher.buffers(), strict=True):
                bt.copy_(bs)
