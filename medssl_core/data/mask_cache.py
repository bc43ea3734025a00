"""Masks of a stack of grey images computed once per (images, segmenter code) and cached on disk: bit-packed,
keyed by the images' bytes and the fingerprint of the segmenter's code (everything it calls in medssl, so an edit
of the segmenter or of a helper it uses misses the old entries), checked against their digest on load, written
atomically. The segmenters
(data.lung_mask, data.pathology_mask) are per image and run in threads (OpenCV releases the GIL)."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from medssl_core.common.atomic import write_atomic
from medssl_core.common.code_digest import function_fingerprint
from medssl_core.common.errors import DataError
from medssl_core.data.locate import cache_dir


def cached_masks(images: np.ndarray, segment: Callable[[np.ndarray], np.ndarray], folder: str, *,
                 cache: Path | None = None, workers: int | None = None) -> np.ndarray:
    """bool (N, H, W): ``segment`` of each uint8 grey image (N, H, W) or (N, H, W, 1), cached under ``cache``
    (default ``cache_dir()/folder``) by the images and the code of ``segment``."""
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(f"{folder} takes uint8 grey images (N, H, W), got {images.dtype} {images.shape}")
    code = function_fingerprint(segment)
    key = hashlib.sha256(f"{code}|{images.shape}".encode() + np.ascontiguousarray(images).tobytes()).hexdigest()
    path = (cache or cache_dir() / folder) / f"{key[:32]}.npz"
    if path.is_file():
        try:
            with np.load(path) as saved:
                packed, digest = saved["packed"], str(saved["sha256"])
            if hashlib.sha256(packed.tobytes()).hexdigest() == digest:
                return np.unpackbits(packed, count=images.size).reshape(images.shape).astype(bool)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass
        path.unlink()  # corrupt or truncated: computed again below
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        masks = np.stack(list(pool.map(segment, images, chunksize=64))) if len(images) else \
            np.zeros(images.shape, dtype=bool)
    packed = np.packbits(masks)
    buf = io.BytesIO()
    np.savez_compressed(buf, packed=packed, sha256=np.asarray(hashlib.sha256(packed.tobytes()).hexdigest()))
    write_atomic(path, buf.getvalue())
    return masks
