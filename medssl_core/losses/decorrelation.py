"""Losses that decorrelate embedding dimensions: Barlow Twins' cross-correlation and VICReg's variance, invariance
and covariance terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from medssl_core.losses.checks import _pair


def _off_diagonal(m: Tensor) -> Tensor:
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


@_pair
def vicreg(z0: Tensor, z1: Tensor, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0,
           eps: float = 1e-4, halve_variance: bool = True) -> Tensor:
    """VICReg (Bardes et al. 2022): 25/25/1 and eps 1e-4 as in facebookresearch/vicreg main_vicreg.py.

    The official code halves the variance term, (v(z0) + v(z1)) / 2 (``halve_variance=True``);
    SmallDataSSL's code and solo-learn sum the two branches.
    """
    return sum(_vicreg_terms(z0, z1, sim_coeff, std_coeff, cov_coeff, eps, halve_variance).values())


def _vicreg_terms(z0: Tensor, z1: Tensor, sim_coeff: float = 25.0, std_coeff: float = 25.0,
                 cov_coeff: float = 1.0, eps: float = 1e-4, halve_variance: bool = True) -> dict[str, Tensor]:
    """The three weighted VICReg terms: invariance, variance, covariance."""
    n, d = z0.shape
    invariance = F.mse_loss(z0, z1)
    x, y = z0 - z0.mean(dim=0), z1 - z1.mean(dim=0)
    std_x, std_y = torch.sqrt(x.var(dim=0) + eps), torch.sqrt(y.var(dim=0) + eps)
    variance = F.relu(1 - std_x).mean() + F.relu(1 - std_y).mean()
    if halve_variance:
        variance = variance / 2
    cov_x, cov_y = x.T @ x / (n - 1), y.T @ y / (n - 1)
    covariance = _off_diagonal(cov_x).pow(2).sum() / d + _off_diagonal(cov_y).pow(2).sum() / d
    return {"invariance": sim_coeff * invariance, "variance": std_coeff * variance,
            "covariance": cov_coeff * covariance}


@_pair
def barlow_twins(z0: Tensor, z1: Tensor, lambda_offdiag: float = 0.0051, eps: float = 1e-5) -> Tensor:
    """Barlow Twins: sum (1 - C_ii)^2 + lambda sum_{i!=j} C_ij^2, C the cross-correlation of the
    batch-standardised views (BN without affine, biased variance, eps 1e-5).

    Default lambda 0.0051: facebookresearch/barlowtwins `--lambd`. lightly's BarlowTwinsLoss (used by the
    MIMeta study) defaults to 5e-3: pass it explicitly there.
    """
    n = z0.shape[0]
    a = F.batch_norm(z0, None, None, training=True, eps=eps)
    b = F.batch_norm(z1, None, None, training=True, eps=eps)
    c = a.T @ b / n
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    return on_diag + lambda_offdiag * _off_diagonal(c).pow(2).sum()


vicreg_terms = _pair(_vicreg_terms)  # the same terms for callers outside this module (checked, full precision)
