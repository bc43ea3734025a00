"""What a run reads and starts from: its dataset (decoded once per process, within a byte budget), its
train/val/test split, its images on the device and its backbone."""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict

import numpy as np
import torch

from medssl_core.common.errors import DataError
from medssl_core.config import Data, Split
from medssl_core.data import load_dataset
from medssl_core.data.dataset import ArrayDataset
from medssl_core.data.lung_mask import crop_to_lungs, lung_masks
from medssl_core.data.pathology_mask import pathology_masks
from medssl_core.data.split_schemes import build_pool, gather_images, label_subset, split_dataset
from medssl_core.models.backbones import build_backbone, feature_dim
from medssl_core.plan.runspec import RunSpec
from medssl_core.run.context import Context


def _default_budget() -> int:
    """MEDSSL_DATA_CACHE_GB, else a quarter of the machine's memory."""
    if os.environ.get("MEDSSL_DATA_CACHE_GB"):
        return int(float(os.environ["MEDSSL_DATA_CACHE_GB"]) * 2**30)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


class DatasetCache:
    """Decoded datasets by (name, size, data dir, data version): a file replaced under the same name is a new
    version and is loaded (and verified) again. The least recently used are dropped once the images held pass
    ``max_bytes``; the one just loaded is always kept."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, ArrayDataset] = OrderedDict()

    def get(self, name: str, size: int, data_dir: str | None, allow_download: bool, version: str | None):
        key = (name, size, data_dir, version)
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        ds = load_dataset(name, size, data_dir, allow_download=allow_download)
        self._items[key] = ds
        while len(self._items) > 1 and self.held_bytes() > self.max_bytes:
            self._items.popitem(last=False)
        return ds

    def held_bytes(self) -> int:
        return sum(a.nbytes for ds in self._items.values() for a in ds.images.values())

    def clear(self) -> None:
        self._items.clear()


DATASETS = DatasetCache(_default_budget())


def split_seed(spec: RunSpec, hp: Data) -> int:
    policy = hp.split.seed_policy
    if policy == "fixed":
        return hp.split.fixed_seed
    if policy == "per_run":
        return spec.seed + 1_000
    # per_script: each script of the study's code shuffles on its own (unseeded in the original)
    return int(hashlib.sha256(f"{spec.seed}|{hp.split.script}".encode()).hexdigest()[:8], 16)


def _dataset(spec: RunSpec, hp: Data, ctx: Context) -> ArrayDataset:
    return DATASETS.get(spec.dataset_used, hp.source_size or hp.image_size, ctx.data_dir, ctx.allow_download,
                        spec.data)


def split_arrays(spec: RunSpec, hp: Data, ctx: Context):
    """train/val/test (images, labels) as numpy, as the spec's split scheme (data.split_schemes) assigns them,
    with the channels and label order the configuration asks for, and the files read (path -> checksum)."""
    ds = _dataset(spec, hp, ctx)
    parts = split_dataset(ds, hp.split, split_seed(spec, hp))
    order = None if hp.label_order is None else np.asarray(hp.label_order)
    out = {}
    for role, part in parts.items():
        images = as_read(hp, part.images)
        labels = part.labels if order is None else np.where(part.labels >= 0, order[part.labels.clip(0)], part.labels)
        out[role] = (images, labels)
    return out, ds.files


def extra_images(hp, ctx: Context) -> tuple[np.ndarray, dict[str, str]]:
    """A pretraining's ``extra_images`` (config.ExtraImages): the named source splits of another dataset, its view
    filter applied, at the run's size and channel mode; and the files read."""
    extra = hp.extra_images
    ds = DATASETS.get(extra.dataset, hp.source_size or hp.image_size, ctx.data_dir, ctx.allow_download, None)
    coded = bool(ds.label_codes)  # CheXpert: its labels need a policy to be read at all (they are not used)
    split = Split(scheme="official", views=extra.views, uncertain="zeros" if coded else None,
                  blank="negative" if coded else None)
    pool = build_pool(ds, split)
    unknown = sorted(set(extra.splits) - set(pool.parts))
    if unknown:
        raise DataError(f"extra_images: {extra.dataset} has no split(s) {unknown}; its splits: {list(pool.parts)}")
    images = gather_images(ds.images, pool, pool.positions(tuple(extra.splits)))
    return as_read(hp, images), ds.files


def labelled_subset(spec: RunSpec, hp: Data, ctx: Context, train_labels: np.ndarray, fraction: float) -> np.ndarray:
    """Positions in the train split of the run's labelled ``fraction`` (data.split_schemes.label_subset)."""
    return label_subset(_dataset(spec, hp, ctx), hp.split, split_seed(spec, hp), train_labels, fraction, spec.seed)


def to_grey(x: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N, H, W, 1) with PIL's ``convert('L')`` (ITU-R 601-2 luma, integer-rounded as
    Pillow computes it); grey images pass unchanged."""
    if x.shape[-1] == 1:
        return x
    out = np.empty((*x.shape[:-1], 1), dtype=np.uint8)
    for start in range(0, len(x), 1024):  # in chunks: CRC's 85,744 tiles at 224 px as uint32 would need 52 GB
        rgb = x[start:start + 1024].astype(np.uint32)
        out[start:start + 1024, ..., 0] = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471
                                           + 0x8000) >> 16
    return out


MASKS = {"lung_rule": lung_masks, "pathology_rule": pathology_masks}


def masks_to_device(hp: Data, images: np.ndarray, device: torch.device) -> torch.Tensor | None:
    """The configured masks of uint8 (N, H, W, C) images as uint8 (N, 1, H, W) on ``device``; None without."""
    if hp.masks == "none":
        return None
    grey = to_grey(images)[..., 0]  # the radiograph as one channel (grey data passes unchanged)
    return torch.from_numpy(MASKS[hp.masks](grey).astype(np.uint8)[:, None]).to(device)


def as_read(hp: Data, images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) images as a run reads them: grey under channel mode 'grey', cut to their lungs'
    bounding boxes under ``crop_to_lungs``."""
    if hp.channel_mode == "grey":
        images = to_grey(images)
    return crop_to_lungs(images, lung_masks(to_grey(images)[..., 0])) if hp.crop_to_lungs else images


def model_inputs(hp: Data, x: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, C) images as the model's uint8 input on ``device``: the image channels it sees, and the lung
    mask (0/1) as the last channel under ``mask_channel`` (augment.AugmentConfig.mask_channel splits it off)."""
    t = images_to_device(x, device, hp.image_channels)
    return torch.cat([t, masks_to_device(hp, x, device)], dim=1) if hp.mask_channel else t


def images_to_device(x: np.ndarray, device: torch.device, channels: int | None = None) -> torch.Tensor:
    """uint8 (N, H, W, C) numpy -> uint8 (N, C, H, W) tensor on ``device``; grey replicated to ``channels``."""
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
    if channels is not None and channels != t.shape[1]:
        t = t.expand(-1, channels, -1, -1).contiguous()
    return t


def run_backbone(hp: Data) -> torch.nn.Module:
    """The backbone a run's configuration describes (random or ImageNet init; weights loaded by the caller)."""
    b = hp.backbone
    return build_backbone(b.arch, hp.input_channels, small_stem=b.small_stem, init=b.init,
                          random_init=b.random_init, zero_init_residual=b.zero_init_residual,
                          image_size=hp.image_size, shared_attention=b.shared_attention, out_dim=b.out_dim,
                          grey_weights=b.grey_weights)


def run_feature_dim(hp: Data) -> int:
    return feature_dim(hp.backbone.arch, hp.backbone.out_dim)
