"""`medssl masks show`: a PNG grid of chest X-rays with their rule-based lung masks (data.lung_mask) outlined and,
below, the 16x16 patch masks a ViT-S/16 sees, so that a user can judge the segmenter on their own data."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from medssl_core.common.errors import DataError
from medssl_core.data import load_dataset
from medssl_core.data.lung_mask import PATCH, lung_masks, patch_mask
from medssl_core.paper.output import save_png
from medssl_core.run.inputs import to_grey


def show(dataset: str, out: Path, *, data_dir=None, size: int = 224, n: int = 8, seed: int = 0,
         allow_download: bool = True) -> Path:
    """Write ``out/masks_<dataset>_<size>.png`` for ``n`` seeded images of a registered dataset at ``size`` px."""
    ds = load_dataset(dataset, size, data_dir, allow_download=allow_download)
    split = "train" if "train" in ds.images else next(iter(ds.images))
    images = ds.images[split]
    if not len(images):
        raise DataError(f"{dataset} has no images in its {split} split")
    idx = np.sort(np.random.default_rng(seed).permutation(len(images))[:n])
    grey = to_grey(images[idx])[..., 0]
    masks = lung_masks(grey)
    patches = size % PATCH == 0
    rows = 2 if patches else 1
    fig, axes = plt.subplots(rows, len(idx), squeeze=False, figsize=(1.9 * len(idx), 2.2 * rows + 0.4))
    for j, (img, mask) in enumerate(zip(grey, masks)):
        ax = axes[0][j]
        ax.imshow(img, cmap="gray")
        ax.contour(mask, levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(f"#{idx[j]}: {100 * mask.mean():.0f} % lung", fontsize=7)
        if patches:
            grid = np.kron(patch_mask(mask), np.ones((PATCH, PATCH)))
            axes[1][j].imshow(img, cmap="gray")
            axes[1][j].imshow(np.ma.masked_where(grid == 0, grid), cmap="autumn", alpha=0.45, vmin=0, vmax=1)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].set_ylabel("lung mask", fontsize=8)
    if patches:
        axes[1][0].set_ylabel(f"{PATCH}x{PATCH} patches > 0.3", fontsize=8)
    fig.suptitle(f"Rule-based lung masks on {dataset} ({split}, {size} px)", fontsize=10)
    fig.tight_layout()
    return save_png(fig, out, f"masks_{dataset}_{size}.png")
