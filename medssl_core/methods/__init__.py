"""SSL methods as small registered classes (see base.py); importing this package registers the built-in ones."""

from medssl_core.methods import builtin, segmentation_guided  # noqa: F401  (registers the methods)
from medssl_core.methods.base import METHODS, Method, StepOutput, build_method, loss_parameters, method_class, register

__all__ = ["METHODS", "Method", "StepOutput", "build_method", "loss_parameters", "method_class", "register"]
