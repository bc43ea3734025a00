"""MedSGSSL's segmentation-guided objectives: masked-token reconstruction, the lung attention prior and its alignment
with CLS attention, cross-domain alignment. Each checks its token, attention or domain tensors' shapes and runs in
full precision like the embedding losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from medssl_core.losses.checks import _full


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
