"""Execute one RunSpec and return its RunRecord. Workers never open the database: they read data, train,
write artifacts and checkpoints under the store's folders, and hand a record back to the coordinator."""

from __future__ import annotations

import functools
import hashlib
import os
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from medssl_core.augment import AugmentConfig, BatchAugment
from medssl_core.data import load_dataset
from medssl_core.data.splits import label_fraction, stratified_split
from medssl_core.device import device_name, peak_memory_mb, use_bf16
from medssl_core.errors import ConfigError, MedsslError
from medssl_core.evaluate import Classifier, FitConfig, extract_features, fit_classifier, knn_evaluate
from medssl_core.models import FEATURE_DIMS, SSLModel, build_backbone, build_head, mlp
from medssl_core.provenance import environment
from medssl_core.runspec import RunSpec
from medssl_core.seeding import seed_everything
from medssl_core.store.records import RunRecord
from medssl_core.train import PretrainConfig, objective, pretrain

FIXED_SPLIT_SEED = 16  # SmallDataSSL's train_test_split(random_state=16)


@dataclass
class Context:
    data_dir: str | None
    device: torch.device
    artifacts_dir: Path
    checkpoints_dir: Path
    allow_download: bool = True
    progress: bool = True


@functools.lru_cache(maxsize=4)
def _load(name: str, size: int, data_dir: str | None, allow_download: bool):
    return load_dataset(name, size, data_dir, allow_download=allow_download)


def split_arrays(spec: RunSpec, ctx: Context):
    """train/val/test (images, labels) as numpy, derived as the spec's split scheme says."""
    hp = spec.hparams
    ds = _load(spec.dataset_used, hp["image_size"], ctx.data_dir, ctx.allow_download)
    split = hp["split"]
    scheme = split["scheme"]
    seed = spec.seed + 1_000 if split.get("seed_policy", "fixed") == "per_run" else FIXED_SPLIT_SEED
    imgs, labs = ds.images, ds.labels
    if scheme == "official":
        out = {s: (imgs[s], labs[s]) for s in ("train", "val", "test")}
    elif scheme == "merge_val":  # Kermany: train + val merged, then a fraction held out as val
        x = np.concatenate([imgs[s] for s in split["merge"]])
        y = np.concatenate([labs[s] for s in split["merge"]])
        rest, held = stratified_split(y, split["val_fraction"], seed)
        out = {"train": (x[rest], y[rest]), "val": (x[held], y[held]), "test": (imgs["test"], labs["test"])}
    elif scheme == "holdout_val":  # BreaKHis: val drawn from the given train split
        rest, held = stratified_split(labs["train"], split["val_fraction"], seed)
        x, y = imgs["train"], labs["train"]
        out = {"train": (x[rest], y[rest]), "val": (x[held], y[held]), "test": (imgs["test"], labs["test"])}
    elif scheme == "stratified":  # Kather: test fraction, then val fraction of the rest
        x, y = imgs["all"], labs["all"]
        rest, test = stratified_split(y, split["test_fraction"], seed)
        tr, va = stratified_split(y[rest], split["val_fraction"], seed)
        out = {"train": (x[rest][tr], y[rest][tr]), "val": (x[rest][va], y[rest][va]), "test": (x[test], y[test])}
    else:
        raise ConfigError(f"unknown split scheme {scheme!r}")
    return out, ds.files


def images_to_device(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, C) numpy -> uint8 (N, C, H, W) tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)


def run_backbone(hp: dict) -> torch.nn.Module:
    """The backbone a run's hyper-parameters describe (random or ImageNet init; weights loaded by the caller)."""
    b = hp["backbone"]
    return build_backbone(b["arch"], hp["channels"], small_stem=b.get("small_stem", False), init=b["init"],
                          image_size=hp["image_size"])


def _save_artifact(ctx: Context, run_id: str, name: str, obj) -> dict:
    path = ctx.artifacts_dir / run_id / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    data = path.read_bytes()
    return {"name": name, "path": str(path), "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _flatten(prefix: str, value, out: list) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out.append({"kind": "hparam", "name": prefix, "value": str(value)})


def _run_pretrain(spec: RunSpec, ctx: Context, bf16: bool) -> tuple[list, list, list, dict]:
    hp = spec.hparams
    splits, files = split_arrays(spec, ctx)
    x_train, y_train = splits["train"]
    subset = hp.get("pretrain_subset")
    unlabeled = x_train
    if subset and subset < len(x_train):
        unlabeled = x_train[np.random.default_rng(spec.seed).permutation(len(x_train))[:subset]]
    m = hp["method"]
    feat = FEATURE_DIMS[hp["backbone"]["arch"]]
    projector = mlp([feat, *m["projector"]], last_bn=m.get("projector_last_bn", False),
                    last_bn_affine=m.get("projector_last_bn_affine", True))
    predictor = mlp([m["projector"][-1], *m["predictor"]]) if m.get("predictor") else None
    model = SSLModel(run_backbone(hp), projector, predictor)
    aug = AugmentConfig.from_dict({**hp["augment"], "size": hp["image_size"]})
    channels_last = ctx.device.type == "cuda"
    t = hp["train"]
    cfg = PretrainConfig(epochs=t["epochs"], batch_size=t["batch_size"], optimizer=t["optimizer"],
                         schedule=t.get("schedule", {"name": "none"}), grad_clip=t.get("grad_clip"),
                         knn_k=t.get("knn_k", 200), knn_metric=t.get("knn_metric", "euclidean"),
                         monitor_every=t.get("monitor_every", 1))
    monitor = (images_to_device(x_train, ctx.device), torch.from_numpy(y_train),
               images_to_device(splits["val"][0], ctx.device), torch.from_numpy(splits["val"][1]))
    result = pretrain(model, objective(m["loss"], m.get("loss_kwargs", {})), images_to_device(unlabeled, ctx.device),
                      BatchAugment(aug, channels_last), cfg, seed=spec.seed, device=ctx.device, bf16=bf16,
                      checkpoint=ctx.checkpoints_dir / spec.run_id / "train.pt", monitor=monitor,
                      eval_augment=BatchAugment(aug.without_randomness(), channels_last),
                      progress=ctx.progress, desc=spec.label())
    artifacts = [_save_artifact(ctx, spec.run_id, "encoder_best.pt", result.best_state),
                 _save_artifact(ctx, spec.run_id, "encoder_last.pt", result.last_state)]
    metrics = [{"split": "train", "name": "final_loss",
                "value": next(c["value"] for c in reversed(result.curves) if c["name"] == "loss")},
               {"split": "val", "name": "best_epoch", "value": float(result.best_epoch)}]
    if result.best_knn_val is not None:
        metrics.append({"split": "val", "name": "knn_accuracy", "value": result.best_knn_val})
    (ctx.checkpoints_dir / spec.run_id / "train.pt").unlink(missing_ok=True)
    return metrics, result.curves, artifacts, files


def _run_evaluate(spec: RunSpec, ctx: Context, bf16: bool) -> tuple[list, list, list, dict]:
    hp = spec.hparams
    proto = hp["protocol"]
    splits, files = split_arrays(spec, ctx)
    x_train, y_train = splits["train"]
    if spec.fraction is not None and spec.fraction < 1.0:
        keep = label_fraction(y_train, spec.fraction, spec.seed)
        x_train, y_train = x_train[keep], y_train[keep]
    backbone = run_backbone(hp)
    if spec.parent is not None:
        which = hp.get("checkpoint", "best")
        path = ctx.artifacts_dir / spec.parent / f"encoder_{which}.pt"
        if not path.is_file():
            raise MedsslError(f"the pretrained encoder {path} of run {spec.parent} is missing; re-run the "
                              "replication so that its pretraining runs again.")
        backbone.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    backbone.to(ctx.device)
    aug = BatchAugment(AugmentConfig(size=hp["image_size"], mean=tuple(hp["augment"]["mean"]),
                                     std=tuple(hp["augment"]["std"])), ctx.device.type == "cuda")
    task, n_classes = hp["task"], hp["n_classes"]
    labels = {"train": y_train, "val": splits["val"][1], "test": splits["test"][1]}
    images = {"train": x_train, "val": splits["val"][0], "test": splits["test"][0]}
    y = {s: torch.from_numpy(v).to(ctx.device) for s, v in labels.items()}
    curves: list = []
    metrics: dict[str, dict[str, float]]
    if proto["kind"] == "knn":
        feats = {s: extract_features(backbone, images_to_device(v, ctx.device), aug, device=ctx.device, bf16=bf16)
                 for s, v in images.items()}
        metrics = knn_evaluate(feats["train"], y["train"], {s: (feats[s], y[s]) for s in ("val", "test")}, task,
                               k=proto.get("k", 200), metric=proto.get("metric", "euclidean"), n_classes=n_classes)
    elif proto["kind"] == "fit":
        train_backbone = proto.get("train_backbone", False)
        bn_train = proto.get("backbone_bn_train", False)
        head = build_head(proto["head"], FEATURE_DIMS[hp["backbone"]["arch"]], n_classes)
        f = proto["fit"]
        cfg = FitConfig(epochs=f["epochs"], batch_size=f["batch_size"], optimizer=f["optimizer"],
                        schedule=f.get("schedule", {"name": "none"}),
                        reload_best_each_epoch=f.get("reload_best_each_epoch", False),
                        select_metric=f.get("select_metric", "accuracy"))
        if not train_backbone and not bn_train:  # frozen features: extract once
            data = {s: (extract_features(backbone, images_to_device(v, ctx.device), aug, device=ctx.device, bf16=bf16),
                        y[s]) for s, v in images.items()}
            model, prepare = Classifier(None, head), (lambda t: t)
        else:
            data = {s: (images_to_device(v, ctx.device), y[s]) for s, v in images.items()}
            model = Classifier(backbone, head, train_backbone=train_backbone, backbone_bn_train=bn_train)
            g = torch.Generator()
            prepare = functools.partial(aug, g=g)
        fit = fit_classifier(model, data, task, cfg, prepare=prepare, seed=spec.seed, device=ctx.device,
                             bf16=bf16, progress=ctx.progress, desc=spec.label())
        metrics, curves = fit.metrics, fit.curves
        metrics["val"]["best_epoch"] = float(fit.best_epoch)
    else:
        raise ConfigError(f"unknown protocol kind {proto['kind']!r}")
    rows = [{"split": s, "name": k, "value": float(v)} for s, d in metrics.items() for k, v in d.items()]
    rows.append({"split": "train", "name": "n_labelled", "value": float(len(y_train))})
    return rows, curves, [], files


def execute_spec(spec: RunSpec, ctx: Context) -> RunRecord:
    """Run one spec; any failure other than an interrupt becomes a 'failed' record with its error."""
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    flags = seed_everything(spec.seed, deterministic=spec.hparams.get("deterministic", False))
    bf16 = use_bf16(ctx.device, spec.hparams.get("amp", "auto"))
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    status, error = "ok", None
    metrics, curves, artifacts, files = [], [], [], {}
    try:
        run = _run_pretrain if spec.kind == "pretrain" else _run_evaluate
        metrics, curves, artifacts, files = run(spec, ctx, bf16)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # recorded, and the rest of the grid goes on
        status = "failed"
        tb = "".join(traceback.format_exception(exc)[-3:]) if not isinstance(exc, MedsslError) else ""
        error = f"{type(exc).__name__}: {exc}" + (f"\n{tb}" if tb else "")
    params = [{"kind": "decision", "name": k, "value": v} for k, v in sorted(spec.decisions.items())]
    _flatten("", spec.hparams, params)
    params.append({"kind": "runtime", "name": "bf16", "value": str(bf16)})
    params += [{"kind": "runtime", "name": k, "value": str(v)} for k, v in flags.items()]
    dev_name = device_name(ctx.device)
    row = run_row(spec, status, error, started, wall_s=time.perf_counter() - t0,
                  peak_mem_mb=peak_memory_mb(ctx.device), device=dev_name)
    return RunRecord(run=row, params=params, metrics=metrics, curves=curves, artifacts=artifacts,
                     environment=environment(ctx.device, dev_name, flags["deterministic"], files))


def run_row(spec: RunSpec, status: str, error: str | None, started: datetime, *, wall_s: float = 0.0,
            peak_mem_mb: float | None = None, device: str | None = None) -> dict:
    """The runs-table row of a spec."""
    return {"run_id": spec.run_id, "kind": spec.kind, "study": spec.study, "dataset": spec.dataset,
            "dataset_used": spec.dataset_used, "method": spec.method, "protocol": spec.protocol,
            "fraction": spec.fraction, "seed": spec.seed, "profile": spec.profile,
            "decisions": ",".join(f"{k}={v}" for k, v in sorted(spec.decisions.items())),
            "parent_run_id": spec.parent, "status": status, "error": error, "started_at": started.isoformat(),
            "finished_at": datetime.now(timezone.utc).isoformat(), "wall_s": wall_s, "peak_mem_mb": peak_mem_mb,
            "device": device, "spec_json": spec.canonical()}

def failed_record(spec: RunSpec, error: str) -> RunRecord:
    """A run that could not start (its pretraining failed): recorded so the summary and SQL show why."""
    return RunRecord(run=run_row(spec, "failed", error, datetime.now(timezone.utc)))
