"""`medssl augment show`: a PNG grid of original images and two augmented views, as a study declares them."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from medssl_core.augment.views import AugmentConfig, BatchAugment
from medssl_core.common.errors import DataError
from medssl_core.config import Augment, set_path
from medssl_core.data import get_dataset, load_dataset
from medssl_core.data.dataset import missing_message
from medssl_core.paper.output import save_png
from medssl_core.plan.catalog import get_study
from medssl_core.plan.grid import resolve_source
from medssl_core.plan.study import AS_PUBLISHED, CORRECTED


def show(study_name: str, dataset: str, out: Path, *, data_dir=None, profile: str = "quick", n: int = 8,
         seed: int = 0) -> Path:
    study = get_study(study_name)
    prof = study.profile(profile)
    keys = {d.key: d for d in study.datasets}
    if dataset in keys:
        source = resolve_source(keys[dataset], prof.image_size, data_dir, True)
        if source is None:
            raise DataError(" | ".join(missing_message(get_dataset(s), data_dir) for s in keys[dataset].sources))
    else:
        source = get_dataset(dataset).name  # a registry name; unknown names raise with suggestions
    size = prof.image_size.get(source, 224)
    ds = load_dataset(source, size, data_dir)
    split = "train" if "train" in ds.images else next(iter(ds.images))
    idx = np.random.default_rng(seed).permutation(len(ds.images[split]))[:n]
    images = torch.from_numpy(ds.images[split][idx].transpose(0, 3, 1, 2).copy())
    rows = []
    for variant in (AS_PUBLISHED, CORRECTED):
        hp = {"augment": Augment.model_validate(study.pretrain_defaults["augment"]).model_dump()}
        for d in study.decisions:
            for param, value in d.settings(variant):
                if param.startswith("augment."):
                    set_path(hp, param, value, f"{study.name} decision {d.name!r}")
        cfg = AugmentConfig.from_dict({**hp["augment"], "size": size})
        g = torch.Generator().manual_seed(seed)
        views = BatchAugment(cfg).two_views(images, g)
        rows.append((views, cfg))
    fig, axes = plt.subplots(5, n, figsize=(1.6 * n, 8.4))
    mean, std = np.array(rows[0][1].mean), np.array(rows[0][1].std)
    for j in range(n):
        axes[0][j].imshow(images[j].permute(1, 2, 0).numpy().squeeze(), cmap="gray", vmin=0, vmax=255)
        r = 1
        for views, _ in rows:
            for v in views:
                img = v[j].permute(1, 2, 0).numpy() * (std if len(std) == v.shape[1] else std[:1]) + (
                    mean if len(mean) == v.shape[1] else mean[:1])
                axes[r][j].imshow(np.clip(img.squeeze(), 0, 1), cmap="gray", vmin=0, vmax=1)
                r += 1
    labels = ["original", "view 1 (as published)", "view 2 (as published)", "view 1 (corrected)",
              "view 2 (corrected)"]
    for i, label in enumerate(labels):
        axes[i][0].set_ylabel(label, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{study.title}: augmentation on {source} ({size} px)", fontsize=10)
    fig.tight_layout()
    return save_png(fig, out, f"{study.name}_{source}.png")
