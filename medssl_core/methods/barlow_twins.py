"""Barlow Twins: the cross-correlation of two views' projections driven to the identity."""

from __future__ import annotations

from medssl_core import losses
from medssl_core.methods.base import register
from medssl_core.methods.two_view import _TwoViewEmbeddingLoss


@register("barlow_twins")
class BarlowTwins(_TwoViewEmbeddingLoss):
    loss = staticmethod(losses.barlow_twins)
