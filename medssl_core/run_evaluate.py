"""One evaluation run: kNN or a fitted head (frozen or fine-tuned backbone) at a label fraction."""

from __future__ import annotations

import functools

import numpy as np
import torch

from medssl_core.augment import AugmentConfig, BatchAugment
from medssl_core.config import EvaluateHP, KnnProtocol, parse
from medssl_core.data.splits import label_fraction
from medssl_core.errors import DataError, MedsslError
from medssl_core.evaluate import Classifier, fit_classifier, knn_evaluate
from medssl_core.features import extract_features
from medssl_core.labels import MISSING, MULTI_LABEL
from medssl_core.models import FEATURE_DIMS, build_head
from medssl_core.runner import Context, Outcome, images_to_device, run_backbone, split_arrays
from medssl_core.runspec import RunSpec


def run_evaluate(spec: RunSpec, ctx: Context, bf16: bool) -> Outcome:
    hp = parse(EvaluateHP, spec.hparams, spec.label())
    proto = hp.protocol
    splits, files = split_arrays(spec, hp, ctx)
    for split, (_, labels_of_split) in splits.items():
        check_labels(labels_of_split, hp.task, hp.n_classes, f"{spec.dataset_used} {split}")
    x_train, y_train = splits["train"]
    if spec.fraction is not None and spec.fraction < 1.0:
        keep = label_fraction(y_train, spec.fraction, spec.seed)
        x_train, y_train = x_train[keep], y_train[keep]
    backbone = run_backbone(hp)
    if spec.parent is not None:
        path = ctx.artifacts_dir / spec.parent / f"encoder_{hp.checkpoint}.pt"
        if not path.is_file():
            raise MedsslError(f"the pretrained encoder {path} of run {spec.parent} is missing; re-run the "
                              "replication so that its pretraining runs again.")
        backbone.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    backbone.to(ctx.device, memory_format=torch.channels_last)
    aug = BatchAugment(AugmentConfig(size=hp.image_size, mean=hp.augment.mean, std=hp.augment.std),
                       channels_last=True)
    ch = hp.input_channels
    labels = {"train": y_train, "val": splits["val"][1], "test": splits["test"][1]}
    images = {"train": x_train, "val": splits["val"][0], "test": splits["test"][0]}
    y = {s: torch.from_numpy(v).to(ctx.device) for s, v in labels.items()}
    curves: list = []
    if isinstance(proto, KnnProtocol):
        feats = {s: extract_features(backbone, images_to_device(v, ctx.device, ch), aug, device=ctx.device,
                                     bf16=bf16) for s, v in images.items()}
        metrics = knn_evaluate(feats["train"], y["train"], {s: (feats[s], y[s]) for s in ("val", "test")}, hp.task,
                               k=proto.k, metric=proto.metric, n_classes=hp.n_classes)
    else:
        head = build_head(proto.head.model_dump(), FEATURE_DIMS[hp.backbone.arch], hp.n_classes)
        if not proto.train_backbone and not proto.backbone_bn_train:  # frozen features: extract once
            data = {s: (extract_features(backbone, images_to_device(v, ctx.device, ch), aug, device=ctx.device,
                                         bf16=bf16), y[s]) for s, v in images.items()}
            model, prepare = Classifier(None, head), (lambda t: t)
        else:
            data = {s: (images_to_device(v, ctx.device, ch), y[s]) for s, v in images.items()}
            model = Classifier(backbone, head, train_backbone=proto.train_backbone,
                               backbone_bn_train=proto.backbone_bn_train)
            prepare = functools.partial(aug, g=torch.Generator())
        fit = fit_classifier(model, data, hp.task, proto.fit, prepare=prepare, seed=spec.seed, device=ctx.device,
                             bf16=bf16, progress=ctx.progress, desc=spec.label())
        metrics, curves = fit.metrics, fit.curves
        metrics["val"]["best_epoch"] = float(fit.best_epoch)
    rows = [{"split": s, "name": k, "value": float(v)} for s, d in metrics.items() for k, v in d.items()]
    rows.append({"split": "train", "name": "n_labelled", "value": float(len(y_train))})
    return Outcome(rows, curves, [], files)


def check_labels(y: np.ndarray, task: str, n_classes: int, where: str) -> None:
    """Labels as every evaluation expects them: (N, n_classes) of 0/1/MISSING for multi-label, (N,) class
    indices (or MISSING) otherwise."""
    multi_label = task == MULTI_LABEL
    shape_ok = y.ndim == 2 and y.shape[1] == n_classes if multi_label else y.ndim == 1
    top = 1 if multi_label else n_classes - 1
    if not shape_ok or (y.size and (y.min() < MISSING or y.max() > top)):
        expected = f"(N, {n_classes}) of 0, 1 or {MISSING}" if multi_label else \
            f"(N,) of class indices 0..{n_classes - 1} or {MISSING}"
        raise DataError(f"{where}: labels of shape {y.shape} with values {y.min() if y.size else '-'}.."
                        f"{y.max() if y.size else '-'}; a {task} task with n_classes={n_classes} expects "
                        f"{expected}. Check the dataset's loader and its registry entry.")
