"""Typed, strict run settings: unknown keys are errors. ``base`` has the machinery (strict models, options
added later, validation with readable errors); ``pretrain`` and ``evaluate`` the settings of each run kind."""

from medssl_core.config.base import Strict, added
from medssl_core.config.evaluate import EvaluateHP, Fit, FitLoss, FitProtocol, Head, KnnProtocol
from medssl_core.config.pretrain import (
    Augment,
    AugmentOps,
    Backbone,
    Data,
    ExtraImages,
    Normalize,
    Optimizer,
    PretrainHP,
    Schedule,
    Split,
    SSLMethod,
    Train,
    image_channels,
    input_channels,
)
from medssl_core.config.validation import check_path, parse, set_path, spec_form, validate, with_method_defaults

__all__ = [
    "Augment", "AugmentOps", "Backbone", "Data", "EvaluateHP", "ExtraImages", "Fit", "FitLoss", "FitProtocol",
    "Head", "KnnProtocol", "Normalize", "Optimizer", "PretrainHP", "SSLMethod", "Schedule", "Split", "Strict",
    "Train", "added", "check_path", "image_channels", "input_channels", "parse", "set_path", "spec_form",
    "validate", "with_method_defaults",
]
