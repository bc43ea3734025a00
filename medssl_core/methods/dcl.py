"""DCL and DCLW: decoupled contrastive learning, unweighted and von Mises-Fisher weighted."""

from __future__ import annotations

from medssl_core import losses
from medssl_core.methods.base import register
from medssl_core.methods.two_view import _TwoViewEmbeddingLoss


@register("dcl")
class DCL(_TwoViewEmbeddingLoss):
    loss = staticmethod(losses.dcl)


@register("dclw")
class DCLW(_TwoViewEmbeddingLoss):
    loss = staticmethod(losses.dclw)
