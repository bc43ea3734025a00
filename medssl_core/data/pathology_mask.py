"""MedSGSSL option 3's rule-based 'pathology' mask (``adaptive_pathology_segmentation``; docs/studies/medsgssl.md,
'Pathology mask (option 3)'): regions of a grey radiograph that are both brighter than their surroundings and on
an edge, with no model:

1. Gaussian adaptive threshold (block 51, C 10, THRESH_BINARY: above the local weighted mean minus 10);
2. AND the Sobel (3x3) gradient magnitude, divided by its maximum, above 0.1;
3. a 5x5 elliptical close, then open;
4. connected components of fewer than 100 pixels dropped.

The block, kernel and minimum area are the notebook's at 224 px and scale with the image's side (the block and kernel
as data.lung_mask's kernels: odd, at least 3; the area with the square of the side).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from medssl_core.common.errors import DataError
from medssl_core.data.lung_mask import NATIVE_SIDE, scaled_kernel
from medssl_core.data.mask_cache import cached_masks

BLOCK, C, GRADIENT_LEVEL, KERNEL, MIN_AREA = 51, 10, 0.1, 5, 100


def pathology_mask(image: np.ndarray) -> np.ndarray:
    """bool (H, W) 'pathology' mask of a uint8 grey radiograph (H, W)."""
    if image.dtype != np.uint8 or image.ndim != 2:
        raise DataError(f"pathology_mask takes a uint8 grey image (H, W), got {image.dtype} {image.shape}")
    side = min(image.shape)
    adaptive = cv2.adaptiveThreshold(image, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY,
                                     scaled_kernel(BLOCK, side), C)
    gradient = np.hypot(cv2.Sobel(image, cv2.CV_64F, 1, 0, ksize=3), cv2.Sobel(image, cv2.CV_64F, 0, 1, ksize=3))
    edges = ((gradient / (gradient.max() + 1e-8)) > GRADIENT_LEVEL).astype(np.uint8) * 255
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (scaled_kernel(KERNEL, side),) * 2)
    combined = cv2.morphologyEx(cv2.morphologyEx(cv2.bitwise_and(adaptive, edges), cv2.MORPH_CLOSE, kernel),
                                cv2.MORPH_OPEN, kernel)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(combined, connectivity=8)
    keep = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= MIN_AREA * (side / NATIVE_SIDE) ** 2)
    return np.isin(labels, keep[keep > 0])


def pathology_masks(images: np.ndarray, *, cache: Path | None = None, workers: int | None = None) -> np.ndarray:
    """bool (N, H, W) pathology masks of uint8 grey images (N, H, W) or (N, H, W, 1), cached (data.mask_cache)."""
    return cached_masks(images, pathology_mask, "pathology_masks", cache=cache, workers=workers)
