"""VICReg: variance, invariance and covariance terms, each logged."""

from __future__ import annotations

from medssl_core import losses
from medssl_core.data.batch import Batch, View
from medssl_core.methods.base import Method, StepOutput, register


@register("vicreg")
class VICReg(Method):
    loss = staticmethod(losses.vicreg)

    def training_step(self, views: list[View], batch: Batch) -> StepOutput:
        z0, z1 = (self.embed(v.image)[1] for v in views)
        terms = losses.vicreg_terms(z0, z1, **self.loss_kwargs)
        return StepOutput(sum(terms.values()), terms)
