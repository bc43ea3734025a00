"""The losses a probe or fine-tuning fits with: cross-entropy, binary cross-entropy, focal, and the double softmax of
one study's code; each with label smoothing and with ``MISSING`` labels left out."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from medssl_core.data.labels import observed_mask


# -- fine-tuning losses: pure functions of (logits, labels); MISSING labels never change a loss or its gradient --
def cross_entropy_loss(logits: Tensor, y: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
    """Softmax cross-entropy of (N, C) logits and (N,) classes, as torch's CrossEntropyLoss(label_smoothing):
    targets (1 - e) onehot + e / C. Mean over the samples whose label is observed."""
    known = observed_mask(y)
    per_sample = F.cross_entropy(_full_precision(logits), y.clamp_min(0), reduction="none",
                                 label_smoothing=label_smoothing)
    return _observed_mean(per_sample, known)


def binary_cross_entropy_loss(logits: Tensor, y: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
    """Sigmoid BCE of (N, L) logits and 0/1 labels, targets smoothed towards 0.5 (the K = 2 case of torch's
    label smoothing). Mean over the observed (sample, label) entries."""
    return _observed_mean(_bce_terms(logits, y, label_smoothing), observed_mask(y))


def focal_loss(logits: Tensor, y: Tensor, *, gamma: float = 2.0, alpha: float | None = None,
               label_smoothing: float = 0.0) -> Tensor:
    """Focal loss (Lin et al. 2017), FL = -alpha_t (1 - p_t)^gamma log p_t, mean over observed labels.

    Labels (N, L): per label with a sigmoid; labels (N,): per sample with a softmax over the C classes.
    ``alpha``: alpha_t = alpha for positives (class 1), 1 - alpha for negatives (binary or multi-label only);
    None weighs every term 1. With label smoothing, -log p_t is the smoothed cross-entropy and p_t its exp(-.)
    (MedSGSSL's FocalLossWithSmoothing); without, both are exactly the paper's.
    """
    known = observed_mask(y)
    if y.ndim == 2:
        ce = _bce_terms(logits, y, label_smoothing)
    else:
        if alpha is not None and logits.shape[1] != 2:
            raise ValueError(f"focal alpha weighs positives against negatives; {logits.shape[1]} classes have "
                             "none: pass alpha=None")
        ce = F.cross_entropy(_full_precision(logits), y.clamp_min(0), reduction="none",
                             label_smoothing=label_smoothing)
    terms = (-torch.expm1(-ce)) ** gamma * ce  # 1 - p_t = -expm1(log p_t), accurate when p_t is near 1
    if alpha is not None:
        terms = torch.where(y == 1, terms.new_tensor(alpha), terms.new_tensor(1 - alpha)) * terms
    return _observed_mean(terms, known)


def _bce_terms(logits: Tensor, y: Tensor, label_smoothing: float) -> Tensor:
    logits = _full_precision(logits)
    targets = y.clamp_min(0).to(logits.dtype) * (1 - label_smoothing) + 0.5 * label_smoothing
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")


def _full_precision(logits: Tensor) -> Tensor:
    """bf16/fp16 logits (autocast) to float32; float64 stays float64 (the tests' references)."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _observed_mean(terms: Tensor, known: Tensor) -> Tensor:
    """Mean of ``terms`` where ``known``; 0 (with a zero gradient) when nothing is observed. ``where`` rather
    than a product: a masked term's gradient is exactly 0 even if that term is not finite."""
    return torch.where(known, terms, 0.0).sum() / known.sum().clamp_min(1)


def double_softmax_cross_entropy_loss(logits: Tensor, y: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of softmax(logits) taken as logits: a head that ends in a softmax, trained with
    F.cross_entropy (MIMeta's readout head). Probabilities in [0, 1] as logits confine every sample's loss to
    [log(C - 1 + e) - 1, log(C - 1 + e)] and shrink its gradient: training is slower and flatter than plain CE."""
    return cross_entropy_loss(torch.softmax(_full_precision(logits), dim=1), y, label_smoothing=label_smoothing)
