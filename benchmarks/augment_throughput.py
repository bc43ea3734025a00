"""Two-view augmentation throughput: medssl's batched on-device pipeline vs per-sample torchvision v2.

    python benchmarks/augment_throughput.py [--device cuda] [--sizes 28,64,224]
"""

from __future__ import annotations

import argparse
import time

import torch
from tabulate import tabulate

import medssl_core  # noqa: F401  (before torchvision)
from medssl_core.augment.views import AugmentConfig, BatchAugment
from medssl_core.common.device import resolve_device


def per_sample_torchvision(size: int):
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=False), v2.RandomHorizontalFlip(),
                       v2.ColorJitter(0.4, 0.4, 0.2, 0.1), v2.RandomGrayscale(0.2),
                       v2.RandomApply([v2.GaussianBlur(max(3, size // 10 // 2 * 2 + 1))], p=0.5),
                       v2.RandomSolarize(0.5, p=0.1), v2.ToDtype(torch.float32, scale=True)])


def timed(fn, repeats: int = 3) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="auto")
    p.add_argument("--sizes", default="28,64")
    p.add_argument("--batch", type=int, default=256)
    args = p.parse_args()
    device = resolve_device(args.device)
    rows = []
    for size in map(int, args.sizes.split(",")):
        x = torch.randint(0, 256, (args.batch, 3, size, size), dtype=torch.uint8, device=device)
        cfg = AugmentConfig(size=size, crop_scale=(0.08, 1.0), hflip=0.5, jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=1.0,
                            grayscale=0.2, blur_p=0.5, solarize_p=0.1, mean=(0.5,), std=(0.5,))
        batched = BatchAugment(cfg)
        g = torch.Generator().manual_seed(0)
        t_batched = timed(lambda b=batched, x=x, g=g: b.two_views(x, g))
        tv = per_sample_torchvision(size)
        xc = x.cpu()
        t_tv = timed(lambda tv=tv, xc=xc: [tv(img) for img in xc for _ in range(2)], repeats=1)
        rows.append([size, f"{args.batch / t_batched:,.0f}", f"{args.batch / t_tv:,.0f}", f"{t_tv / t_batched:.1f}x"])
    print(f"two-view pairs per second, batch {args.batch}, device {device}")
    print(tabulate(rows, ["px", "medssl batched", "torchvision v2 per sample (CPU)", "speed-up"]))


if __name__ == "__main__":
    main()
