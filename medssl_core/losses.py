"""SSL objectives as pure functions of tensors.

Every function takes the two views' embeddings (N, D), checks them, and computes in float32 (float64 stays
float64) with autocast disabled, so that bf16 autocast in the model never reaches the loss arithmetic.
Defaults carry a comment naming their source; docs/studies/references.md, 'Losses', has the formulas.
The segmentation-guided objectives of MedSGSSL (last section) take token, attention and domain tensors besides
embeddings; each checks its shapes and runs in full precision the same way.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor


def _pair(fn):
    """Validate a pair of embeddings and run ``fn`` in full precision outside autocast."""

    @functools.wraps(fn)
    def wrapper(z0: Tensor, z1: Tensor, *args, **kwargs) -> Tensor:
        for name, z in (("z0", z0), ("z1", z1)):
            if not isinstance(z, Tensor) or z.ndim != 2:
                raise ValueError(f"{fn.__name__}: {name} must be a 2-D (batch, dim) tensor, got "
                                 f"{getattr(z, 'shape', type(z))}")
        if z0.shape != z1.shape:
            raise ValueError(f"{fn.__name__}: the two views must have the same shape, got {tuple(z0.shape)} "
                             f"and {tuple(z1.shape)}")
        if z0.shape[0] < 2:
            raise ValueError(f"{fn.__name__}: needs a batch of at least 2 samples, got {z0.shape[0]}: "
                             "negatives and batch statistics are undefined for one sample")
        dtype = torch.float64 if torch.float64 in (z0.dtype, z1.dtype) else torch.float32
        with torch.autocast(z0.device.type, enabled=False):
            return fn(z0.to(dtype), z1.to(dtype), *args, **kwargs)

    return wrapper


def _nt_xent_logits(z0: Tensor, z1: Tensor, temperature: float, name: str) -> tuple[Tensor, Tensor]:
    """The 2N anchors' similarity logits (self-similarity excluded) and each anchor's positive: NT-Xent's inputs."""
    if temperature <= 0:
        raise ValueError(f"{name}: temperature must be positive, got {temperature}")
    n = z0.shape[0]
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    return logits, torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)


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


vicreg_terms = _pair(_vicreg_terms)  # the same terms for callers outside this module (checked, full precision)


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


# -- segmentation-guided SSL (MedSGSSL, docs/studies/medsgssl.md, 'Options 7, 8 and 10 (ViT-S)') -----------------
def _full(*tensors: Tensor) -> tuple[Tensor, ...]:
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    return tuple(t.to(dtype) for t in tensors)


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


def masked_token_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """sum_{b,j,d} M_bj (pred - target)^2 / sum_{b,j} M_bj: the squared error summed over the feature dims and
    averaged over the masked tokens (N, P, D) of the batch (MedSGSSL's reconstruction term; 0 without any)."""
    if pred.ndim != 3 or pred.shape != target.shape or mask.shape != pred.shape[:2]:
        raise ValueError(f"masked_token_mse: pred and target (N, P, D) with a (N, P) mask, got {tuple(pred.shape)}, "
                         f"{tuple(target.shape)}, {tuple(mask.shape)}")
    with torch.autocast(pred.device.type, enabled=False):
        pred, target = _full(pred, target)
        m = mask.to(pred.dtype)
        return ((pred - target).pow(2).sum(-1) * m).sum() / m.sum().clamp_min(1)


def lung_attention_prior(patch_mask: Tensor, floor: float = 0.1) -> Tensor:
    """The prior the CLS token's attention is aligned with: ((1 - floor) m + floor), normalised over the patches."""
    p = (1 - floor) * patch_mask + floor
    return p / p.sum(-1, keepdim=True)


def attention_alignment(cls_attention: Tensor, patch_mask: Tensor, layer_weights: Tensor | None = None,
                        floor: float = 0.1) -> Tensor:
    """Cross-entropy of the CLS token's attention over the patches against the lung prior, per head:
    -sum_j p_j log max(a_lhj, 1e-8), averaged over batch and heads, then over layers (``layer_weights`` (L,)
    summing to 1: a weighted sum; None: the mean). ``cls_attention`` (L, N, H, P): each layer's post-softmax CLS
    row over the P patch columns (not renormalised); ``patch_mask`` (N, P) in [0, 1]."""
    if cls_attention.ndim != 4 or patch_mask.shape != (cls_attention.shape[1], cls_attention.shape[3]):
        raise ValueError(f"attention_alignment: attention (L, N, H, P) and mask (N, P), got "
                         f"{tuple(cls_attention.shape)} and {tuple(patch_mask.shape)}")
    with torch.autocast(cls_attention.device.type, enabled=False):
        a, m = _full(cls_attention, patch_mask)
        prior = lung_attention_prior(m, floor)
        per_layer = -(prior[None, :, None, :] * a.clamp_min(1e-8).log()).sum(-1).mean(dim=(1, 2))
        if layer_weights is None:
            return per_layer.mean()
        return (layer_weights.to(per_layer) * per_layer).sum()


def cross_domain_alignment(features: Tensor, domains: Tensor) -> Tensor:
    """1 - cos(mean of domain 0's features, mean of domain 1's), each mean L2-normalised (MedSGSSL option 10, on
    the CLS tokens of NIH and CheXpert); 0 unless each domain has at least 2 images in the batch."""
    if features.ndim != 2 or domains.shape != features.shape[:1]:
        raise ValueError(f"cross_domain_alignment: features (N, D) and domains (N,), got {tuple(features.shape)} "
                         f"and {tuple(domains.shape)}")
    with torch.autocast(features.device.type, enabled=False):
        (f,) = _full(features)
        a, b = (domains == 0).to(f.dtype), (domains == 1).to(f.dtype)  # weights, not indexing: no host sync
        mean_a, mean_b = (a @ f) / a.sum().clamp_min(1), (b @ f) / b.sum().clamp_min(1)
        loss = 1 - F.cosine_similarity(F.normalize(mean_a, dim=0), F.normalize(mean_b, dim=0), dim=0)
        return torch.where((a.sum() >= 2) & (b.sum() >= 2), loss, loss * 0)


LOSSES = {"nt_xent": nt_xent, "dcl": dcl, "dclw": dclw, "simsiam": simsiam, "vicreg": vicreg,
          "barlow_twins": barlow_twins, "byol": byol}
