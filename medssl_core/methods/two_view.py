"""The shape most methods share: embed two views and apply the method's loss to the two projections."""

from __future__ import annotations

from medssl_core.data.batch import Batch, View
from medssl_core.methods.base import Method, StepOutput


class _TwoViewEmbeddingLoss(Method):
    """A loss of the two views' projections z0, z1."""

    def training_step(self, views: list[View], batch: Batch) -> StepOutput:
        z0, z1 = (self.embed(v.image)[1] for v in views)
        return StepOutput(self.loss(z0, z1, **self.loss_kwargs))
