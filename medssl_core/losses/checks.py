"""What every embedding loss checks first: two (N, D) views of one shape and N >= 2, computed in float32 (float64 stays
float64) with autocast disabled, so that bf16 autocast in the model never reaches the loss arithmetic."""

from __future__ import annotations

import functools

import torch
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


# -- segmentation-guided SSL (MedSGSSL, docs/studies/medsgssl.md, 'Options 7, 8 and 10 (ViT-S)') -----------------
def _full(*tensors: Tensor) -> tuple[Tensor, ...]:
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    return tuple(t.to(dtype) for t in tensors)
