"""A rule-based lung mask for a chest radiograph, as MedSGSSL's ``precompute_lung_masks_chexpert.ipynb``
(``SegConfig``) computes it (docs/studies/medsgssl.md, 'Lung mask'), with no model and no training data:

1. CLAHE (clip 2.0, 8x8 tiles), then a 5x5 Gaussian blur (kernels as at 224 px, see below);
2. Otsu's threshold shifted by (std - 50) * 0.5 (std of the blurred image), clipped to [40, 220], inverted: the
   dark (air-filled) parts become foreground;
3. connected components of at least 1 % of the image that reach into the central zone (15 % margins); the two
   largest are kept (the two lungs);
4. a 7x7 elliptical close, then open; an 11x11 Gaussian blur of the mask, kept above 0.3;
5. no component at all: the whole image (the notebook's fallback, so that a mask always exists);
6. the patch mask: each 16x16 patch's mean above 0.3 (196 values at 224 px, one per ViT-S/16 token).

``lung_masks`` runs the segmenter over a stack of images, cached on disk (data.mask_cache); ``crop_to_lungs`` cuts
each image to its mask's bounding box (MedSGSSL option 4).

Which image the std is taken of is not stated in the spec; the blurred one is used here. The kernels are the
notebook's at 224 px and scale with the image's side (odd, at least 3), so that a 28 px image is not opened away.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from medssl_core.common.errors import DataError
from medssl_core.data.mask_cache import cached_masks

MIN_AREA, CENTRAL_MARGIN, KEEP = 0.01, 0.15, 2
PATCH, PATCH_LEVEL = 16, 0.3
NATIVE_SIDE = 224  # the side the notebook's kernels are for


def scaled_kernel(size: int, side: int) -> int:
    """``size`` (a kernel at 224 px) scaled to ``side``: odd, at least 3."""
    k = max(3, round(size * side / NATIVE_SIDE))
    return k if k % 2 else k + 1


def lung_mask(image: np.ndarray) -> np.ndarray:
    """bool (H, W) lung mask of a uint8 grey radiograph (H, W) with dark lungs (MONOCHROME2)."""
    if image.dtype != np.uint8 or image.ndim != 2:
        raise DataError(f"lung_mask takes a uint8 grey image (H, W), got {image.dtype} {image.shape}")
    h, w = image.shape
    side = min(h, w)
    k5, k7, k11 = (scaled_kernel(k, side) for k in (5, 7, 11))
    blurred = cv2.GaussianBlur(cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(image), (k5, k5), 0)
    otsu, _ = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    threshold = float(np.clip(otsu + (blurred.std() - 50) * 0.5, 40, 220))
    _, dark = cv2.threshold(blurred, threshold, 255, cv2.THRESH_BINARY_INV)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    y0, y1 = int(h * CENTRAL_MARGIN), int(np.ceil(h * (1 - CENTRAL_MARGIN)))
    x0, x1 = int(w * CENTRAL_MARGIN), int(np.ceil(w * (1 - CENTRAL_MARGIN)))
    central = np.unique(labels[y0:y1, x0:x1])
    candidates = [c for c in range(1, n) if stats[c, cv2.CC_STAT_AREA] >= MIN_AREA * h * w and c in central]
    if not candidates:
        return np.ones((h, w), dtype=bool)
    kept = sorted(candidates, key=lambda c: stats[c, cv2.CC_STAT_AREA], reverse=True)[:KEEP]
    mask = np.isin(labels, kept).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k7, k7))
    mask = cv2.morphologyEx(cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel), cv2.MORPH_OPEN, kernel)
    return cv2.GaussianBlur(mask.astype(np.float32), (k11, k11), 0) > 0.3


def patch_mask(mask: np.ndarray, patch: int = PATCH, level: float = PATCH_LEVEL) -> np.ndarray:
    """bool (H / patch, W / patch): patches whose share of lung pixels is above ``level``."""
    h, w = mask.shape
    if h % patch or w % patch:
        raise DataError(f"a {h}x{w} mask does not divide into {patch}x{patch} patches; resize it to a multiple")
    return mask.reshape(h // patch, patch, w // patch, patch).mean(axis=(1, 3)) > level


def lung_masks(images: np.ndarray, *, cache: Path | None = None, workers: int | None = None) -> np.ndarray:
    """bool (N, H, W) lung masks of uint8 grey images (N, H, W) or (N, H, W, 1), computed once per set of images
    and segmenter code (data.mask_cache; ``cache`` defaults to ``cache_dir()/lung_masks``)."""
    return cached_masks(images, lung_mask, "lung_masks", cache=cache, workers=workers)


def crop_to_lungs(images: np.ndarray, masks: np.ndarray, min_ratio: float = 0.5) -> np.ndarray:
    """uint8 (N, H, W, C) images each cut to its mask's bounding box and resized back to H x W (bilinear, the aspect
    ratio not kept), as MedSGSSL option 4's ``get_lung_bbox`` with padding 0: rows y_min..y_max and columns
    x_min..x_max of the mask, the last ones excluded as its slices do; the whole image when the mask is empty or the
    box is under ``min_ratio`` of the height or width."""
    if images.ndim != 4 or masks.shape != images.shape[:3]:
        raise DataError(f"crop_to_lungs takes images (N, H, W, C) and their masks (N, H, W), got {images.shape} "
                        f"and {masks.shape}")
    h, w = images.shape[1:3]
    out = images.copy()
    for i, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        if not len(ys):
            continue
        y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
        if y1 - y0 < min_ratio * h or x1 - x0 < min_ratio * w:
            continue
        crop = cv2.resize(images[i, y0:y1, x0:x1], (w, h), interpolation=cv2.INTER_LINEAR)
        out[i] = crop.reshape(out[i].shape)
    return out
