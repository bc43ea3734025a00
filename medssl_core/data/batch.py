"""What the training loop hands a method: a batch of uint8 images with, where the data has them, masks of the
same geometry, labels (single- or multi-label, -1 for missing), dataset indices and patient ids; and the
augmented views made from it."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Batch:
    images: Tensor  # uint8 (N, C, H, W)
    masks: Tensor | None = None  # uint8 (N, K, H, W), 0/1: segmentation masks aligned with the images
    labels: Tensor | None = None  # (N,) class indices or (N, L) multi-label 0/1, -1 where missing/uncertain
    index: Tensor | None = None  # positions in the dataset the batch was taken from
    patients: np.ndarray | None = None  # patient ids (strings), where the data has them
    domains: Tensor | None = None  # (N,) the source dataset of each image in a merged pretraining set (0, 1, ...)

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"Batch.images must be uint8 (N, C, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        n, _, height, width = self.images.shape
        if self.masks is not None and (self.masks.dtype != torch.uint8 or self.masks.ndim != 4
                                       or self.masks.shape[0] != n or self.masks.shape[2:] != (height, width)):
            raise ValueError(f"Batch.masks must be uint8 (N, K, H, W) with the images' N, H, W "
                             f"{(n, height, width)}, got {self.masks.dtype} {tuple(self.masks.shape)}")
        for name in ("labels", "index", "domains"):
            value = getattr(self, name)
            if value is not None and value.shape[0] != n:
                raise ValueError(f"Batch.{name} has {value.shape[0]} rows for {n} images")
        if self.patients is not None and len(self.patients) != n:
            raise ValueError(f"Batch.patients has {len(self.patients)} entries for {n} images")

    def __len__(self) -> int:
        return self.images.shape[0]

    def take(self, idx: Tensor, host_idx: Tensor | None = None) -> Batch:
        """The rows ``idx`` (a tensor on the images' device) of every field; ``host_idx``: the same rows on the CPU,
        where the patient ids are (else read back from the device: a host sync)."""
        def pick(t):
            return None if t is None else t[idx.to(t.device)]
        index = idx if self.index is None else self.index[idx.to(self.index.device)]
        rows = idx.cpu() if host_idx is None else host_idx
        patients = None if self.patients is None else self.patients[rows.numpy()]
        return replace(self, images=self.images[idx], masks=pick(self.masks), labels=pick(self.labels),
                       index=index, patients=patients, domains=pick(self.domains))


@dataclass(frozen=True)
class View:
    """One augmented view: normalised float image (N, C, S, S) and, with masks, the 0/1 uint8 masks
    (N, K, S, S) that went through the same geometric transforms."""

    image: Tensor
    mask: Tensor | None = None
