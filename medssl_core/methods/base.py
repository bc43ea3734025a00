"""What every SSL method shares, and the registry the configurations name.

A method owns its heads (projector, predictor, a teacher where it has one) and says how one batch of views
becomes a loss (:meth:`Method.training_step`). The training loop calls the hooks at its boundaries, which is
where methods schedule things: EMA momentum, parameter groups frozen for some epochs, curricula.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from medssl_core.common.errors import ConfigError
from medssl_core.data.batch import Batch, View
from medssl_core.models.heads import mlp


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class StepOutput:
    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)  # named parts of the loss, logged as curves


class Method(nn.Module):
    """Backbone + projector (+ predictor). Subclasses set ``loss`` (a pure function of ``medssl_core.losses``
    whose keyword arguments the configuration's ``loss_kwargs`` may set), optionally ``Options`` (a strict
    pydantic model of their own settings) and implement :meth:`training_step`."""

    loss: ClassVar[Callable[..., Tensor] | None] = None
    Options: ClassVar[type[BaseModel]] = NoOptions
    n_views: ClassVar[int] = 2
    needs_masks: ClassVar[bool] = False  # reads Batch.masks / View.mask: the run must set masks
    archs: ClassVar[tuple[str, ...] | None] = None  # the backbones it works with; None: any
    teachers: ClassVar[tuple[str, ...]] = ()  # its EMA copies (attribute names): not optimised, see momentum.py

    def __init__(self, cfg, backbone: Callable[[], nn.Module], feature_dim: int, image_size: int = 224,
                 image_channels: int = 1):
        """``cfg``: the run's ``config.SSLMethod``. ``backbone`` builds the encoder; it is called after the heads
        are made (the order fixes which random numbers initialise which layer). ``image_size`` and
        ``image_channels``: the views' (what a decoder reconstructs)."""
        super().__init__()
        self.cfg, self.image_size, self.image_channels = cfg, image_size, image_channels
        self.options = self.Options.model_validate(cfg.options)
        self.loss_kwargs = dict(cfg.loss_kwargs)
        self.projector = mlp([feature_dim, *cfg.projector], hidden_bn=cfg.projector_hidden_bn,
                             last_bn=cfg.projector_last_bn,
                             last_bn_affine=cfg.projector_last_bn_affine)
        self.predictor = mlp([cfg.projector[-1], *cfg.predictor]) if cfg.predictor else None
        self.backbone = backbone()

    def embed(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(features h, projection z, prediction p); p is z without a predictor."""
        h = self.backbone(x)
        z = self.projector(h)
        return h, z, self.predictor(z) if self.predictor is not None else z

    def training_step(self, views: list[View], batch: Batch) -> StepOutput:
        raise NotImplementedError

    def student_parameters(self) -> Iterator[nn.Parameter]:
        """What the optimiser updates: every parameter but those of the EMA teachers named in ``teachers``."""
        frozen = {id(p) for name in self.teachers for p in getattr(self, name).parameters()}
        return (p for p in self.parameters() if id(p) not in frozen)

    # hooks: the loop calls them in this order; each is a no-op unless a method schedules something
    def on_fit_start(self, steps_per_epoch: int, epochs: int) -> None:
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs

    def on_epoch_start(self, epoch: int) -> None:
        pass

    def on_step_end(self, epoch: int, step: int) -> None:
        pass

    def optimizer_restarts(self) -> tuple[int, ...]:
        """0-based epochs at whose start the loop builds a fresh optimiser over the parameters that then require
        gradients, and restarts the schedule over the epochs left (MedSGSSL's re-created AdamW after unfreezing)."""
        return ()

    def scheduled_values(self) -> dict[str, float]:
        """Values a method schedules (e.g. EMA momentum), logged as curves at each epoch's end."""
        return {}

    def progress(self, epoch: int, step: int) -> float:
        """Fraction of training done after (epoch, step), in [0, 1]."""
        return min(1.0, (epoch * self.steps_per_epoch + step + 1) / (self.epochs * self.steps_per_epoch))


METHODS: dict[str, type[Method]] = {}


def register(name: str):
    def add(cls: type[Method]) -> type[Method]:
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice ({METHODS[name].__name__}, {cls.__name__})")
        METHODS[name] = cls
        cls.method_name = name
        return cls
    return add


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ConfigError(f"Unknown SSL method {name!r}; registered: {sorted(METHODS)}")
    return METHODS[name]


def loss_parameters(cls: type[Method]) -> dict[str, Any]:
    """The keyword arguments of a method's loss (beyond its tensors) and their defaults."""
    if cls.loss is None:
        return {}
    sig = inspect.signature(cls.loss)
    return {k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}


def build_method(cfg, backbone: Callable[[], nn.Module], feature_dim: int, image_size: int = 224, *,
                 image_channels: int = 1) -> Method:
    return method_class(cfg.name)(cfg, backbone, feature_dim, image_size, image_channels)
