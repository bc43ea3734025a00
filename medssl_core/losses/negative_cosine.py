"""Negative cosine similarity between a prediction and a stopped-gradient target: SimSiam (the other view's projection)
and BYOL (the EMA teacher's)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from medssl_core.losses.checks import _pair


def simsiam(p0: Tensor, p1: Tensor, z0: Tensor, z1: Tensor) -> Tensor:
    """SimSiam's symmetric negative cosine: -(cos(p0, sg(z1)) + cos(p1, sg(z0))) / 2 (official main_simsiam.py).

    Without a predictor (SmallDataSSL's code) pass p = z: the gradient then flows through p only.
    """
    return -0.5 * (_cosine_to_target(p0, z1) + _cosine_to_target(p1, z0))


@_pair
def _cosine_to_target(p: Tensor, z: Tensor) -> Tensor:
    return F.cosine_similarity(p, z.detach(), dim=1).mean()


def byol(p0: Tensor, p1: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
    """BYOL (Grill et al. 2020, Eq. 2): ||p/|p| - t/|t|||^2 = 2 - 2 cos(p, t) for each prediction against the
    other view's target (constants: no gradient), summed over the two directions and averaged over the batch."""
    return _byol_one_way(p0, t1) + _byol_one_way(p1, t0)


@_pair
def _byol_one_way(p: Tensor, t: Tensor) -> Tensor:
    return (2 - 2 * F.cosine_similarity(p, t.detach(), dim=1)).mean()
