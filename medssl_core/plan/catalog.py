"""The studies medssl knows: the modules of the ``replications`` package and the studies of installed packages,
each with the installed packages' methods as guests."""

from __future__ import annotations

import importlib
import pkgutil

from medssl_core.common.errors import ConfigError, did_you_mean
from medssl_core.plan.plugins import plugin_methods, plugin_studies
from medssl_core.plan.study import Study


def studies() -> dict[str, Study]:
    """Every study registered under the `replications` package (a module-level STUDY) or by an installed package
    (entry points 'medssl.studies'), each with the installed packages' methods as guests (plugins.py)."""
    import replications  # the studies' package beside medssl_core, imported once asked for

    found = {}
    for info in pkgutil.iter_modules(replications.__path__):
        module = importlib.import_module(f"replications.{info.name}")
        study = getattr(module, "STUDY", None)
        if isinstance(study, Study):
            found[study.name] = study
    for study in plugin_studies():
        if study.name in found:
            raise ConfigError(f"an installed package declares the study {study.name!r}, which medssl declares too")
        found[study.name] = study
    guests = plugin_methods()
    return {name: study.with_guests(guests) for name, study in found.items()} if guests else found


def get_study(name: str) -> Study:
    known = studies()
    if name not in known:
        raise ConfigError(f"Unknown study {name!r}; registered studies: {sorted(known)}.{did_you_mean(name, known)}")
    return known[name]
