"""Dice of the rule-based lung mask (medssl_core.data.lung_mask) against real lung shapes: phantom radiographs
rendered from the 517 lung masks of ``semantic_masks_v7labs_lungs.zip`` (shipped inside the torchxrayvision wheel;
read from the installed package, never copied), the empty ones skipped.

    python benchmarks/lung_mask_dice.py [--side 256] [--limit N]
"""

from __future__ import annotations

import argparse
import importlib.util
import zipfile
from pathlib import Path

import cv2
import numpy as np

import medssl_core  # noqa: F401  (first: torchvision over a CPU torch)
from medssl_core.data.lung_mask import lung_mask


def shapes_zip() -> Path | None:
    spec = importlib.util.find_spec("torchxrayvision")
    path = Path(spec.submodule_search_locations[0]) / "data" / "semantic_masks_v7labs_lungs.zip" if spec else None
    return path if path is not None and path.is_file() else None


def lung_shapes(side: int, limit: int | None = None):
    """(name, bool (side, side) lung shape) of every non-empty mask in the zip, in name order."""
    with zipfile.ZipFile(shapes_zip()) as z:
        names = sorted(n for n in z.namelist() if not n.endswith("/"))
        count = 0
        for name in names:
            img = cv2.imdecode(np.frombuffer(z.read(name), np.uint8), cv2.IMREAD_GRAYSCALE)
            if img is None or not (img > 0).any():
                continue
            yield name, cv2.resize((img > 0).astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST) > 0
            count += 1
            if limit is not None and count >= limit:
                return


def phantom(shape: np.ndarray, seed: int) -> np.ndarray:
    """A radiograph-like image: air beside a soft-tissue body (the lungs' width, widened, top to bottom), dark
    lungs with rib shadows, a bright spine between them, blur and noise."""
    rng = np.random.default_rng(seed)
    side = shape.shape[0]
    img = np.full(shape.shape, 25.0)
    ys, xs = np.nonzero(shape)
    hull = cv2.convexHull(np.stack([xs, ys], axis=1).astype(np.int32))
    body = np.zeros(shape.shape, np.uint8)
    cv2.fillConvexPoly(body, hull, 1)
    body = cv2.dilate(body, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side // 6 | 1, side // 6 | 1))) > 0
    pad = side // 12  # neck, shoulders and abdomen: soft tissue over the lungs' width, top to bottom of the film
    body[:, max(0, xs.min() - pad):xs.max() + pad] = True
    img[body] = 185
    centre = int(xs.mean())
    img[:, max(0, centre - side // 30):centre + side // 30] += 25  # spine
    ribs = 12 * np.sin(np.arange(side) / side * 2 * np.pi * 9 + rng.uniform(0, 6))[:, None]
    img[shape] = 75 + ribs.repeat(side, axis=1)[shape]
    img = cv2.GaussianBlur(img, (0, 0), side / 128) + rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--limit", type=int)
    args = ap.parse_args()
    if shapes_zip() is None:
        raise SystemExit("torchxrayvision is not installed: pip install -c constraints.txt torchxrayvision")
    scores = np.asarray([dice(lung_mask(phantom(s, i)), s)
                         for i, (_, s) in enumerate(lung_shapes(args.side, args.limit))])
    q = np.percentile(scores, [10, 25, 50, 75, 90])
    print(f"{len(scores)} lung shapes at {args.side} px: Dice mean {scores.mean():.3f}, median {q[2]:.3f}, "
          f"10/25/75/90 % {q[0]:.3f} / {q[1]:.3f} / {q[3]:.3f} / {q[4]:.3f}, below 0.5: {(scores < 0.5).sum()}")


if __name__ == "__main__":
    main()
