"""Typed, strict run configurations: every key a study, profile or decision sets must name a real field.

pydantic (v2) rather than hand-validated dataclasses: it gives nested models that refuse unknown keys
(`extra="forbid"`), type checks with the exact path of the bad key, discriminated unions for the protocol
kinds, and a `model_dump` that writes every default explicitly, so a run's spec states each value it used
and a changed default changes the spec (and the config id) instead of the numbers silently.
"""

from __future__ import annotations

import copy
import inspect
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medssl_core import losses
from medssl_core.errors import ConfigError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Backbone(Strict):
    arch: Literal["resnet18", "resnet50", "mobilenet_v2", "vit_small"]
    small_stem: bool = False  # ResNet 3x3 stride-1 stem without max-pool
    init: Literal["random", "imagenet"] = "random"


class Augment(Strict):
    """The fields of augment.AugmentConfig but the output size (the run's image_size)."""

    crop_scale: tuple[float, float] | None = None
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    crop_p: float = 1.0
    hflip: float = 0.0
    vflip: float = 0.0
    rotate_degrees: float = 0.0
    rotate_p: float = 0.0
    jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    jitter_p: float = 0.0
    grayscale: float = 0.0
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_frac: float = 0.1
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5
    noise_p: float = 0.0
    noise_std: float = 0.0
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)


class Normalize(Strict):
    mean: tuple[float, ...]
    std: tuple[float, ...]


class Optimizer(Strict):
    name: Literal["sgd", "adam", "adamw", "lars"]
    lr: float
    momentum: float = 0.0  # sgd (torch default 0) and lars
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    backbone_lr: float | None = None  # fine-tuning: per-group learning rates
    head_lr: float | None = None


class Schedule(Strict):
    name: Literal["none", "step", "cosine", "warmup_cosine"] = "none"
    step_size: int = 1
    gamma: float = 0.1
    start_epoch: int = -1  # step: the scheduler steps only after 0-based epochs > start_epoch
    warmup_epochs: int = 0


class Split(Strict):
    scheme: Literal["official", "merge_val", "holdout_val", "stratified"]
    merge: tuple[str, ...] = ()
    val_fraction: float | None = None
    test_fraction: float | None = None
    # fixed: one seeded split for every run; per_run: each seed its own; per_script: each script of the study's
    # code (pretraining, each evaluation script) draws its own split, as unseeded shuffles do
    seed_policy: Literal["fixed", "per_run", "per_script"] = "fixed"
    script: str = "pretrain"  # which script of the study's code a run stands for (per_script)


class Train(Strict):
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=2)
    optimizer: Optimizer
    schedule: Schedule = Schedule()
    grad_clip: float | None = None
    knn_k: int = 200
    knn_metric: Literal["euclidean", "cosine"] = "euclidean"
    monitor_every: int = 1  # epochs between kNN evaluations on val (0: never)


class SSLMethod(Strict):
    loss: str
    loss_kwargs: dict[str, Any] = {}
    projector: tuple[int, ...]
    projector_last_bn: bool = False
    projector_last_bn_affine: bool = True
    predictor: tuple[int, ...] | None = None

    @model_validator(mode="after")
    def _loss_and_kwargs(self):
        if self.loss not in losses.LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; known: {sorted(losses.LOSSES)}")
        params = loss_parameters(self.loss)
        unknown = sorted(set(self.loss_kwargs) - set(params))
        if unknown:
            raise ValueError(f"loss {self.loss!r} has no argument(s) {unknown}; its arguments: {sorted(params)}")
        return self


def loss_parameters(name: str) -> dict[str, Any]:
    """The keyword arguments of a loss (beyond its tensors) and their defaults."""
    sig = inspect.signature(losses.LOSSES[name])
    return {k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}


class Data(Strict):
    """What every run on a dataset shares: its geometry, labels and split."""

    image_size: int = Field(ge=8)
    source_size: int | None = None  # side the images are held at; crops are cut here, then resized
    channels: int  # channels of the data as stored
    channel_mode: Literal["native", "rgb"] = "native"  # rgb: grey replicated to 3 channels (`.convert('RGB')`)
    n_classes: int
    task: Literal["binary", "multi-class", "multi-label", "ordinal"]
    split: Split
    amp: Literal["off", "bf16"] = "off"
    deterministic: bool = False

    @property
    def input_channels(self) -> int:
        return 3 if self.channel_mode == "rgb" else self.channels


class PretrainHP(Data):
    backbone: Backbone
    augment: Augment
    train: Train
    method: SSLMethod
    pretrain_subset: int | None = None  # train on a seeded subset of this many images


class KnnProtocol(Strict):
    kind: Literal["knn"]
    k: int = 200
    metric: Literal["euclidean", "cosine"] = "euclidean"


class Head(Strict):
    type: Literal["linear", "mlp"] = "linear"
    hidden: tuple[int, ...] = (512,)
    activation: Literal["relu", "leaky_relu", "gelu"] = "relu"


class Fit(Strict):
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=2)
    optimizer: Optimizer
    schedule: Schedule = Schedule()
    reload_best_each_epoch: bool = False  # SmallDataSSL: every epoch starts from the best weights so far
    select_metric: Literal["accuracy", "auc", "balanced_accuracy", "f1"] = "accuracy"


class FitProtocol(Strict):
    kind: Literal["fit"]
    head: Head
    train_backbone: bool = False
    backbone_bn_train: bool = False  # frozen backbone's BatchNorm in train mode (SmallDataSSL's linear.py)
    fit: Fit


class EvaluateHP(Data):
    backbone: Backbone
    augment: Normalize
    checkpoint: Literal["best", "last"] = "best"  # which encoder of the pretraining
    protocol: Annotated[KnnProtocol | FitProtocol, Field(discriminator="kind")]

    @field_validator("protocol", mode="before")
    @classmethod
    def _kind_given(cls, v):
        if isinstance(v, dict) and "kind" not in v:
            raise ValueError("a protocol needs 'kind': 'knn' or 'fit'")
        return v


def validate(model: type[Strict], hp: dict, where: str) -> dict:
    """Validate ``hp`` and return it with every default written out; a ConfigError names each bad key."""
    try:
        return model.model_validate(hp).model_dump(mode="json")
    except ValidationError as exc:
        raise ConfigError(f"{where}: invalid configuration\n" + _explain(model, exc)) from None


def parse(model: type[Strict], value, where: str):
    """``value`` (a dict or already a ``model``) as a ``model``; a ConfigError names each bad key."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise ConfigError(f"{where}: invalid configuration\n" + _explain(model, exc)) from None


def _explain(model: type[Strict], exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            valid = _fields_at(model, [p for p in err["loc"][:-1] if isinstance(p, str)])
            msg = f"unknown key (misspelt?); valid keys here: {', '.join(valid) if valid else '?'}"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def _fields_at(model, path: list[str]) -> list[str]:
    models = [model]
    for key in path:
        below = []
        for parent in models:
            if key in parent.model_fields:
                below += _models_in(parent.model_fields[key].annotation)
            elif "kind" in parent.model_fields and key in get_args(parent.model_fields["kind"].annotation):
                below.append(parent)  # pydantic names the member of a discriminated union by its kind
        models = below
    return sorted({k for m in models for k in m.model_fields})


def _models_in(annotation) -> list[type[BaseModel]]:
    """The models an annotation refers to (itself, or the members of a union)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in get_args(annotation) for m in _models_in(a)]


def set_path(d: dict, dotted: str, value, where: str) -> None:
    """Set an existing key of a validated (fully written-out) configuration; a missing key is an error."""
    keys = dotted.split(".")
    node = d
    for i, k in enumerate(keys):
        if not isinstance(node, dict) or k not in node:
            here = ".".join(keys[:i]) or "the configuration"
            valid = sorted(node) if isinstance(node, dict) else []
            raise ConfigError(f"{where}: {dotted!r} is not a field ({here} has no {k!r}; valid keys: "
                              f"{', '.join(valid)}).")
        if i == len(keys) - 1:
            node[k] = copy.deepcopy(value)
        else:
            node = node[k]


def with_loss_defaults(method: dict) -> dict:
    """The method's loss arguments with the loss's defaults written out (so a decision can name them)."""
    if method.get("loss") in losses.LOSSES:
        return {**method, "loss_kwargs": {**loss_parameters(method["loss"]), **method.get("loss_kwargs", {})}}
    return method


def check_path(model: type[Strict], dotted: str, where: str) -> None:
    """A decision's ``param`` must name a field of ``model`` (or an argument of a loss, under loss_kwargs)."""
    keys = dotted.split(".")
    models: list[type[BaseModel]] = [model]
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if keys[:i] == ["method", "loss_kwargs"]:
            valid = sorted({p for name in losses.LOSSES for p in loss_parameters(name)})
            if key in valid and last:
                return
        else:
            valid = sorted({k for m in models for k in m.model_fields})
            if key in valid:
                models = [sub for m in models if key in m.model_fields
                          for sub in _models_in(m.model_fields[key].annotation)]
                if last:
                    return
                if models or keys[:i + 1] == ["method", "loss_kwargs"]:
                    continue
                valid = []  # a plain value has no keys below it
        here = ".".join(keys[:i]) or "the run configuration"
        raise ConfigError(f"{where}: param {dotted!r} is not a field ({here} has no {key!r}; valid keys: "
                          f"{', '.join(valid) or 'none'}).")
