"""BYOL: a predictor on the student and an EMA teacher's projection as the target."""

from __future__ import annotations

from medssl_core import losses
from medssl_core.data.batch import Batch, View
from medssl_core.methods.base import StepOutput, register
from medssl_core.methods.momentum import MomentumMethod


@register("byol")
class BYOL(MomentumMethod):
    """BYOL (Grill et al. 2020): the student's prediction of each view regresses the teacher's projection of
    the other view."""

    loss = staticmethod(losses.byol)

    def training_step(self, views: list[View], batch: Batch) -> StepOutput:
        p0, p1 = (self.embed(v.image)[2] for v in views)
        t0, t1 = (self.teacher_embed(v.image) for v in views)
        return StepOutput(self.loss(p0, p1, t0, t1))

    def scheduled_values(self) -> dict[str, float]:
        return {"momentum": self.momentum}
