"""One evaluation run: kNN or a fitted head (frozen or fine-tuned backbone) at a label fraction."""

from __future__ import annotations

import functools

import numpy as np
import torch

from medssl_core.augment.views import AugmentConfig, BatchAugment
from medssl_core.common.errors import DataError, MedsslError
from medssl_core.config import EvaluateHP, FitProtocol, KnnProtocol, parse
from medssl_core.data.labels import MISSING, MULTI_LABEL
from medssl_core.data.splits import label_fraction
from medssl_core.evaluate.embedding import categories, embed_2d, silhouette
from medssl_core.evaluate.features import extract_features
from medssl_core.evaluate.gradcam import grad_cams, lung_scores
from medssl_core.evaluate.knn import knn_evaluate
from medssl_core.models.heads import build_head
from medssl_core.plan.runspec import RunSpec, canonical_json
from medssl_core.run.context import Context, Outcome, save_artifact
from medssl_core.run.inputs import (
    labelled_subset,
    model_inputs,
    run_backbone,
    run_feature_dim,
    split_arrays,
    split_seed,
)
from medssl_core.store.records import EMBEDDING, FINETUNED, GRADCAM, TEST_FEATURES, TEST_SCORES
from medssl_core.train.finetune import Classifier, fit_classifier


def run_evaluate(spec: RunSpec, ctx: Context, bf16: bool) -> Outcome:
    hp = parse(EvaluateHP, spec.hparams, spec.label())
    proto = hp.protocol
    splits, files = split_arrays(spec, hp, ctx)
    for split, (_, labels_of_split) in splits.items():
        check_labels(labels_of_split, hp.task, hp.n_classes, f"{spec.dataset_used} {split}")
    fitted = isinstance(proto, FitProtocol)
    if fitted and proto.fit.val_limit is not None:
        splits["val"] = tuple(a[:proto.fit.val_limit] for a in splits["val"])
    keep = labelled_positions(spec, hp, ctx, splits)
    if fitted and proto.fit.score_on == "val":  # the number reported is the one that selected the epoch
        splits["test"] = splits["val"]
        if "val" in keep:
            keep["test"] = keep["val"]
    backbone = run_backbone(hp)
    if spec.start is not None:  # the model another evaluation fine-tuned (it started from the encoder itself)
        path = ctx.artifacts_dir / spec.start.run_id / FINETUNED
        if not path.is_file():
            raise MedsslError(f"the fine-tuned model {path} of run {spec.start.run_id} ({spec.start.label()}), "
                              "which this evaluation starts from, is missing; re-run the replication.")
        backbone.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["backbone"])
    elif spec.parent is not None:
        path = ctx.artifacts_dir / spec.parent / f"encoder_{hp.checkpoint}.pt"
        if not path.is_file():
            raise MedsslError(f"the pretrained encoder {path} of run {spec.parent} is missing; re-run the "
                              "replication so that its pretraining runs again.")
        backbone.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    backbone.to(ctx.device, memory_format=torch.channels_last)
    aug = BatchAugment(AugmentConfig(size=hp.image_size, mean=hp.augment.mean, std=hp.augment.std,
                                     resize_mode=hp.augment.resize_mode, mask_channel=hp.mask_channel),
                       channels_last=True)
    images = {s: x[keep[s]] if s in keep else x for s, (x, _) in splits.items()}
    labels = {s: y[keep[s]] if s in keep else y for s, (_, y) in splits.items()}
    y = {s: torch.from_numpy(v).to(ctx.device) for s, v in labels.items()}
    curves: list = []
    artifacts: list = []
    if isinstance(proto, KnnProtocol):
        feats = frozen_features(spec, hp, ctx, backbone, aug, splits, keep, bf16)
        metrics = knn_evaluate(feats["train"], y["train"], {s: (feats[s], y[s]) for s in ("val", "test")}, hp.task,
                               k=proto.k, metric=proto.metric, n_classes=hp.n_classes)
        artifacts.append(save_artifact(ctx, spec.run_id, TEST_FEATURES, test_features(feats["test"], labels["test"])))
    else:
        head = build_head(proto.head.model_dump(), run_feature_dim(hp), hp.n_classes)
        augment_train = None
        if proto.fit.augment is not None:
            train_aug = BatchAugment(AugmentConfig(size=hp.image_size, mean=hp.augment.mean, std=hp.augment.std,
                                                   mask_channel=hp.mask_channel, **proto.fit.augment.model_dump()),
                                     channels_last=True)
            augment_train = functools.partial(train_aug, g=torch.Generator().manual_seed(spec.seed))
        frozen_test = None  # the test features of a frozen backbone, when they are extracted anyway
        if not proto.train_backbone and not proto.backbone_bn_train and augment_train is None:
            # frozen features and no augmentation: extract once
            feats = frozen_features(spec, hp, ctx, backbone, aug, splits, keep, bf16)
            data = {s: (feats[s], y[s]) for s in images}
            frozen_test = feats["test"]
            artifacts.append(save_artifact(ctx, spec.run_id, TEST_FEATURES, test_features(feats["test"],
                                                                                          labels["test"])))
            model, prepare = Classifier(None, head), (lambda t: t)
        else:
            data = {s: (model_inputs(hp, v, ctx.device), y[s]) for s, v in images.items()}
            model = Classifier(backbone, head, train_backbone=proto.train_backbone,
                               backbone_bn_train=proto.backbone_bn_train)
            prepare = functools.partial(aug, g=torch.Generator())
        fit = fit_classifier(model, data, hp.task, proto.fit, prepare=prepare, seed=spec.seed, device=ctx.device,
                             bf16=bf16, progress=ctx.progress, desc=spec.label(), augment_train=augment_train)
        metrics, curves = fit.metrics, fit.curves
        artifacts.append(save_artifact(ctx, spec.run_id, TEST_SCORES, {"scores": fit.scores["test"],
                                                                       "labels": labels["test"]}))
        metrics["val"]["best_epoch"] = float(fit.best_epoch)
        if proto.fit.scored == "last":
            metrics["val"]["scored_epoch"] = float(fit.last_epoch)
        if proto.gradcam:
            cams = gradcam_record(hp, backbone, head, images["test"][:proto.gradcam], fit.scores["test"], aug, ctx)
            metrics["test"]["cam_focus"] = float(np.mean(cams["focus"]))
            if np.isfinite(cams["lung_energy"]).any():  # a map that is zero everywhere has no energy to share
                metrics["test"]["cam_lung_energy"] = float(np.nanmean(cams["lung_energy"]))
            artifacts.append(save_artifact(ctx, spec.run_id, GRADCAM, cams))
        if proto.embedding != "none":
            emb = embedding_record(hp, proto.embedding, backbone, images["test"], labels["test"], aug, ctx, bf16,
                                   frozen_test)
            if np.isfinite(emb["silhouette"]):
                metrics["test"]["silhouette"] = float(emb["silhouette"])
            artifacts.append(save_artifact(ctx, spec.run_id, EMBEDDING, emb))
        if proto.fit.save_weights:  # the whole selected model, also where only the head trained
            weights = {"backbone": backbone.state_dict(), "head": head.state_dict()}
            artifacts.append(save_artifact(ctx, spec.run_id, FINETUNED, weights))
    rows = [{"split": s, "name": k, "value": float(v)} for s, d in metrics.items() for k, v in d.items()]
    rows.append({"split": "train", "name": "n_labelled", "value": float(len(labels["train"]))})
    rows.append({"split": "val", "name": "n_val_labelled", "value": float(len(labels["val"]))})
    rows += [{"split": s, "name": "n_images", "value": float(len(labels[s]))} for s in ("val", "test")]
    return Outcome(rows, curves, artifacts, files)


def labelled_positions(spec: RunSpec, hp: EvaluateHP, ctx: Context, splits: dict) -> dict[str, np.ndarray]:
    """Positions of the labels an evaluation uses in each split its label fraction cuts: the training fraction
    (run_inputs.labelled_subset) and, under split.val_labels 'follow_fraction', the same fraction of val, stratified
    per class and drawn from the run's seed as a stratified training fraction is (splits.label_fraction: every class
    present keeps at least one). A split not named keeps all its labels."""
    if spec.fraction is None or spec.fraction >= 1.0:
        return {}
    keep = {"train": labelled_subset(spec, hp, ctx, splits["train"][1], spec.fraction)}
    val_labels = splits["val"][1]
    if hp.split.val_labels == "follow_fraction" and len(val_labels):
        keep["val"] = label_fraction(val_labels, spec.fraction, spec.seed)
    return keep


def gradcam_record(hp: EvaluateHP, backbone, head, images: np.ndarray, scores: np.ndarray, aug, ctx: Context) -> dict:
    """Grad-CAM maps of the scored model for the first test images, each for its most probable class (or
    label), with the grey images at model size, their lung masks and the per-image scores."""
    import cv2

    targets = scores[:len(images)].argmax(axis=1)
    inputs = aug(model_inputs(hp, images, ctx.device), g=torch.Generator())
    cams = grad_cams(backbone, head, hp.backbone.arch, inputs, targets)
    side = hp.image_size
    grey = np.stack([cv2.resize(np.ascontiguousarray(x[..., 0]), (side, side), interpolation=cv2.INTER_AREA)
                     for x in images])
    scored = lung_scores(cams, grey)
    return {"images": grey, "cams": cams.astype(np.float16), "targets": targets, **scored}


def embedding_record(hp: EvaluateHP, method: str, backbone, images: np.ndarray, labels: np.ndarray, aug,
                     ctx: Context, bf16: bool, features: torch.Tensor | None = None) -> dict:
    """The scored backbone's test features (up to MAX_SAVED_FEATURES, a fixed subset) in 2-D, with their
    categories (by finding) and silhouette. ``features``: all test features already extracted (frozen backbone)."""
    keep = _saved_subset(len(labels))
    if features is None:
        x = model_inputs(hp, images[keep], ctx.device)
        features = extract_features(backbone, x, aug, device=ctx.device, bf16=bf16)
    else:
        features = features[torch.from_numpy(keep).to(features.device)]
    feats = features.float().cpu().numpy()
    cats = categories(labels[keep], hp.task)
    xy = embed_2d(feats, method)
    return {"xy": xy.astype(np.float32), "categories": cats, "labels": labels[keep],
            "silhouette": np.float64(silhouette(xy, cats))}


MAX_SAVED_FEATURES = 2_000
_FEATURES: dict[str, dict[str, torch.Tensor]] = {}  # the last encoder's features (one entry: its evaluations follow)


def frozen_features(spec: RunSpec, hp: EvaluateHP, ctx: Context, backbone, aug, splits: dict,
                    keep: dict[str, np.ndarray], bf16: bool):
    """Frozen, eval-mode features of every split (each split in ``keep`` restricted to its positions there),
    extracted once per encoder and data: a pretraining's kNN and probe evaluations share them. Randomly initialised
    encoders are not shared (their weights are the run's seed's)."""
    key = None
    if spec.parent is not None or spec.start is not None or hp.backbone.init != "random":
        start = spec.start.run_id if spec.start else None
        key = canonical_json([spec.parent, start, hp.checkpoint, hp.backbone.model_dump(mode="json"), spec.dataset_used,
                              spec.data, hp.split.model_dump(mode="json"), split_seed(spec, hp), hp.image_size,
                              hp.source_size, hp.input_channels, hp.channel_mode, hp.label_order,
                              hp.augment.model_dump(mode="json"), bf16,
                              str(ctx.device)])
    feats = _FEATURES.get(key) if key is not None else None
    if feats is None:
        feats = {s: extract_features(backbone, model_inputs(hp, x, ctx.device), aug,
                                     device=ctx.device, bf16=bf16) for s, (x, _) in splits.items()}
        _FEATURES.clear()
        if key is not None:
            _FEATURES[key] = feats
    return {s: f[torch.from_numpy(keep[s]).to(f.device)] if s in keep else f for s, f in feats.items()}


def test_features(features: torch.Tensor, labels: np.ndarray) -> dict:
    """Up to MAX_SAVED_FEATURES test features (float16; a fixed random subset beyond) with their labels."""
    keep = _saved_subset(len(labels))
    return {"features": features.float().cpu().numpy()[keep].astype(np.float16), "labels": labels[keep]}


def _saved_subset(n: int) -> np.ndarray:
    """All n positions, or a fixed random MAX_SAVED_FEATURES of them."""
    if n <= MAX_SAVED_FEATURES:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).permutation(n)[:MAX_SAVED_FEATURES])


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
