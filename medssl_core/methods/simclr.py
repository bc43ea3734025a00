"""SimCLR: NT-Xent between two views' projections."""

from __future__ import annotations

from medssl_core import losses
from medssl_core.methods.base import register
from medssl_core.methods.two_view import _TwoViewEmbeddingLoss


@register("simclr")
class SimCLR(_TwoViewEmbeddingLoss):
    loss = staticmethod(losses.nt_xent)
