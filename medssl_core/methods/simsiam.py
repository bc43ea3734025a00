"""SimSiam: a predictor and a stopped-gradient target, no negatives, no teacher."""

from __future__ import annotations

from medssl_core import losses
from medssl_core.data.batch import Batch, View
from medssl_core.methods.base import Method, StepOutput, register


@register("simsiam")
class SimSiam(Method):
    """Predictions p regress the other view's stop-gradient projection z (without a predictor, p = z)."""

    loss = staticmethod(losses.simsiam)

    def training_step(self, views: list[View], batch: Batch) -> StepOutput:
        (_, z0, p0), (_, z1, p1) = (self.embed(v.image) for v in views)
        return StepOutput(self.loss(p0, p1, z0, z1))
