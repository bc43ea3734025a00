"""SSL methods, one per module, each a small registered class (see ``base``). Importing this package imports every
module in it, which registers its methods: a new method is a new module here (or, from another package, an entry
point: ``plan.plugins``)."""

import importlib
import pkgutil

from medssl_core.methods.base import METHODS, Method, StepOutput, build_method, loss_parameters, method_class, register

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "Method", "StepOutput", "build_method", "loss_parameters", "method_class", "register"]
