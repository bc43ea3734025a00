"""Pretrain SimCLR on the real PneumoniaMNIST for a few CPU minutes and compare the linear-probe test AUC and
accuracy of the pretrained encoder with a random-init encoder under the same probe.

    python benchmarks/simclr_pneumonia.py --data-dir DIR --minutes 5

Not a unit test: it measures. Prints throughput (image pairs per second) and a results table.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from tabulate import tabulate

import medssl_core  # noqa: F401  (before torchvision)
from medssl_core.augment.views import AugmentConfig, BatchAugment
from medssl_core.common.device import resolve_device, use_bf16
from medssl_core.common.seeding import seed_everything
from medssl_core.config import SSLMethod
from medssl_core.data import load_dataset
from medssl_core.data.batch import Batch
from medssl_core.evaluate.features import extract_features
from medssl_core.evaluate.knn import knn_evaluate
from medssl_core.methods import build_method
from medssl_core.models.backbones import build_backbone
from medssl_core.train.finetune import Classifier, FitConfig, fit_classifier
from medssl_core.train.pretrain import PretrainConfig, pretrain


def probe(backbone, ds, device, bf16, seed):
    aug = BatchAugment(AugmentConfig(mean=(0.5,), std=(0.5,)))
    data = {}
    for split in ("train", "val", "test"):
        x = torch.from_numpy(ds.images[split].transpose(0, 3, 1, 2).copy()).to(device)
        data[split] = (extract_features(backbone, x, aug, device=device, bf16=bf16),
                       torch.from_numpy(ds.labels[split]).to(device))
    fit = fit_classifier(Classifier(None, torch.nn.Linear(512, 2)), data, "binary",
                         FitConfig(epochs=100, batch_size=256, optimizer={"name": "adam", "lr": 1e-3},
                                   schedule={"name": "cosine"}, select_metric="auc"),
                         prepare=lambda t: t, seed=seed, device=device, bf16=bf16)
    knn = knn_evaluate(data["train"][0], data["train"][1], {"test": data["test"]}, "binary", k=20, metric="cosine",
                       n_classes=2)
    return fit.metrics["test"], knn["test"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="where the MedMNIST files are (default: medssl's, e.g. $MEDSSL_DATA)")
    p.add_argument("--minutes", type=float, default=5.0, help="pretraining budget (whole epochs)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=28)
    args = p.parse_args()
    device = resolve_device(args.device)
    bf16 = use_bf16(device, "auto") if device.type == "cuda" else False
    seed_everything(args.seed)
    ds = load_dataset("pneumoniamnist", args.size, args.data_dir)
    images = torch.from_numpy(ds.images["train"].transpose(0, 3, 1, 2).copy()).to(device)
    torch.manual_seed(args.seed)
    random_init = build_backbone("resnet18", 1, small_stem=False)
    simclr = SSLMethod(name="simclr", loss_kwargs={"temperature": 0.2}, projector=[512, 128])
    data = Batch(images)
    aug = BatchAugment(AugmentConfig(size=args.size, crop_scale=(0.2, 1.0), hflip=0.5, rotate_degrees=10,
                                     rotate_p=0.5, jitter=(0.4, 0.4, 0.0, 0.0), jitter_p=0.8, blur_p=0.2,
                                     mean=(0.5,), std=(0.5,)), channels_last=device.type == "cuda")
    # one timed epoch sizes the budget
    t0 = time.perf_counter()
    cfg = PretrainConfig(epochs=1, batch_size=args.batch_size,
                         optimizer={"name": "adamw", "lr": 1e-3, "weight_decay": 1e-4})
    pretrain(build_method(simclr, lambda: copy.deepcopy(random_init), 512), data, aug, cfg, seed=args.seed,
             device=device, bf16=bf16, progress=False)
    epoch_s = time.perf_counter() - t0
    epochs = max(1, int(args.minutes * 60 / epoch_s))
    pairs_per_s = (images.shape[0] // args.batch_size) * args.batch_size / epoch_s
    print(f"device {device}, bf16 {bf16}: {epoch_s:.1f} s/epoch ({pairs_per_s:.0f} pairs/s); pretraining "
          f"{epochs} epochs in total")
    model = build_method(simclr, lambda: copy.deepcopy(random_init), 512)
    cfg = PretrainConfig(epochs=epochs, batch_size=args.batch_size, schedule={"name": "warmup_cosine",
                         "warmup_epochs": min(2, epochs)}, optimizer={"name": "adamw", "lr": 1e-3,
                                                                     "weight_decay": 1e-4})
    t0 = time.perf_counter()
    pretrain(model, data, aug, cfg, seed=args.seed, device=device, bf16=bf16, progress=True)
    wall = time.perf_counter() - t0
    rows = []
    for name, enc in (("SimCLR pretrained", model.backbone), ("random init", random_init.to(device))):
        lin, knn = probe(enc, ds, device, bf16, args.seed)
        rows.append([name, f"{lin['auc']:.4f}", f"{lin['accuracy']:.4f}", f"{knn['auc']:.4f}",
                     f"{knn['accuracy']:.4f}"])
    print(f"\nPneumoniaMNIST {args.size} px, ResNet-18, {epochs} epochs of SimCLR in {wall / 60:.1f} min, seed "
          f"{args.seed}; linear probe (frozen, 100 epochs Adam, selected on val AUC) and kNN (k=20, cosine):")
    print(tabulate(rows, ["encoder", "linear test AUC", "linear test acc", "kNN test AUC", "kNN test acc"]))


if __name__ == "__main__":
    main()
