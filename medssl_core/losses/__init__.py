"""SSL objectives as pure functions of tensors, one module per family (``contrastive``, ``decorrelation``,
``negative_cosine``, ``segmentation_guided``), the supervised fitting losses (``classification``) and the checks
they share (``checks``). Defaults carry a comment naming their source; docs/studies/references.md, 'Losses', has
the formulas."""

from medssl_core.losses.classification import (
          binary_cross_entropy_loss,
          cross_entropy_loss,
          double_softmax_cross_entropy_loss,
          focal_loss,
)
from medssl_core.losses.contrastive import dcl, dclw, nt_xent, von_mises_fisher_weights, weighted_nt_xent
from medssl_core.losses.decorrelation import barlow_twins, vicreg, vicreg_terms
from medssl_core.losses.negative_cosine import byol, simsiam
from medssl_core.losses.segmentation_guided import (
          attention_alignment,
          cross_domain_alignment,
          lung_attention_prior,
          masked_token_mse,
)

LOSSES = {"nt_xent": nt_xent, "dcl": dcl, "dclw": dclw, "simsiam": simsiam, "vicreg": vicreg,
          "barlow_twins": barlow_twins, "byol": byol}
__all__ = [
    "LOSSES", "attention_alignment", "barlow_twins", "binary_cross_entropy_loss", "byol", "cross_domain_alignment",
    "cross_entropy_loss", "dcl", "dclw", "double_softmax_cross_entropy_loss", "focal_loss", "lung_attention_prior",
    "masked_token_mse", "nt_xent", "simsiam", "vicreg", "vicreg_terms", "von_mises_fisher_weights",
    "weighted_nt_xent",
]
