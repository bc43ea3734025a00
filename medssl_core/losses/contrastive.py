"""Contrastive losses: NT-Xent (SimCLR), decoupled contrastive learning (DCL) and its von Mises-Fisher weighted form
(DCLW), and NT-Xent with per-pair weights (MedSGSSL's option 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from medssl_core.losses.checks import _pair


def _nt_xent_logits(z0: Tensor, z1: Tensor, temperature: float, name: str) -> tuple[Tensor, Tensor]:
    """The 2N anchors' similarity logits (self-similarity excluded) and each anchor's positive: NT-Xent's inputs."""
    if temperature <= 0:
        raise ValueError(f"{name}: temperature must be positive, got {temperature}")
    n = z0.shape[0]
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    return logits, (torch.arange(2 * n, device=z.device) + n) % (2 * n)  # made on the device: no blocking copy


@_pair
def nt_xent(z0: Tensor, z1: Tensor, temperature: float = 0.5) -> Tensor:
    """SimCLR's NT-Xent over all 2N anchors. Default tau 0.5: lightly NTXentLoss and SmallDataSSL's code."""
    return F.cross_entropy(*_nt_xent_logits(z0, z1, temperature, "nt_xent"))


def _dcl_one_way(z0: Tensor, z1: Tensor, temperature: float, weights: Tensor | None) -> Tensor:
    n = z0.shape[0]
    z0, z1 = F.normalize(z0, dim=1), F.normalize(z1, dim=1)
    cross = z0 @ z1.T / temperature
    positive = -cross.diagonal()
    if weights is not None:
        positive = positive * weights
    eye = torch.eye(n, dtype=torch.bool, device=z0.device)
    negatives = torch.cat([(z0 @ z0.T / temperature).masked_fill(eye, float("-inf")),
                           cross.masked_fill(eye, float("-inf"))], dim=1)
    return (positive + torch.logsumexp(negatives, dim=1)).mean()


def von_mises_fisher_weights(z0: Tensor, z1: Tensor, sigma: float) -> Tensor:
    """DCLW's positive weights w_i = 2 - N softmax_i(cos(z0_i, z1_i) / sigma) (Yeh et al. 2021, Eq. 6)."""
    cos = (F.normalize(z0, dim=1) * F.normalize(z1, dim=1)).sum(dim=1)
    return 2 - z0.shape[0] * torch.softmax(cos / sigma, dim=0)


@_pair
def dcl(z0: Tensor, z1: Tensor, temperature: float = 0.1, symmetric: bool = True) -> Tensor:
    """Decoupled contrastive loss: the positive pair is removed from the denominator (Yeh et al. 2021).

    Default tau 0.1: lightly DCLLoss. ``symmetric`` averages both directions (lightly); SmallDataSSL's code
    uses one direction only (``symmetric=False``).
    """
    loss = _dcl_one_way(z0, z1, temperature, None)
    return 0.5 * (loss + _dcl_one_way(z1, z0, temperature, None)) if symmetric else loss


@_pair
def dclw(z0: Tensor, z1: Tensor, temperature: float = 0.1, sigma: float = 0.5, symmetric: bool = True,
         detach_weights: bool = False) -> Tensor:
    """DCL with negative von Mises-Fisher weighting of the positive term.

    Defaults tau 0.1, sigma 0.5: lightly DCLWLoss and SmallDataSSL's code. The weights carry gradient as in
    the DCL reference implementation that SmallDataSSL follows; ``detach_weights`` treats them as constants.
    """
    if sigma <= 0:
        raise ValueError(f"dclw: sigma must be positive, got {sigma}")

    def weights(a, b):
        w = von_mises_fisher_weights(a, b, sigma)
        return w.detach() if detach_weights else w

    loss = _dcl_one_way(z0, z1, temperature, weights(z0, z1))
    if symmetric:
        loss = 0.5 * (loss + _dcl_one_way(z1, z0, temperature, weights(z1, z0)))
    return loss




def weighted_nt_xent(z0: Tensor, z1: Tensor, weights: Tensor, temperature: float = 0.1) -> Tensor:
    """NT-Xent whose anchor i (of 2N) counts w_{i mod N} times: (1 / 2N) sum_i w_i (-log p_pos,i), *not* divided by
    sum w, so the weights scale the loss too (MedSGSSL option 1: w = 1 + 0.3 mean(lung mask); tau 0.1)."""
    if weights.shape != (z0.shape[0],):
        raise ValueError(f"weighted_nt_xent: weights must be ({z0.shape[0]},), one per image, got "
                         f"{tuple(weights.shape)}")
    return _weighted_nt_xent(z0, z1, weights.to(z0.device), temperature)


@_pair
def _weighted_nt_xent(z0: Tensor, z1: Tensor, weights: Tensor, temperature: float) -> Tensor:
    per_anchor = F.cross_entropy(*_nt_xent_logits(z0, z1, temperature, "weighted_nt_xent"), reduction="none")
    return (weights.to(per_anchor.dtype).repeat(2) * per_anchor).mean()
