"""Methods and studies from installed packages, found by entry points: no edit of medssl is needed.

A package declares, in its pyproject.toml::

    [project.entry-points."medssl.methods"]
    hinge = "my_package.hinge:METHOD"      # a medssl_core.study.Method: name, title, the method's settings

    [project.entry-points."medssl.studies"]
    my_study = "my_package.study:STUDY"    # a medssl_core.study.Study

Loading a method's entry point imports its module, whose ``@register("hinge")`` class computes it. Every study
takes the installed methods as *guests*: `replicate STUDY --methods hinge` runs one there (with the study's own
pretraining settings under the method's), the paper shows its runs beside the study's methods, and a run's code
fingerprint follows the method's class into its package as it does into medssl's.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points

from medssl_core.common.errors import ConfigError
from medssl_core.plan.study import Method, Study

METHOD_GROUP, STUDY_GROUP = "medssl.methods", "medssl.studies"


def _load(group: str, kind: type) -> list:
    found = []
    for entry in entry_points(group=group):
        try:
            value = entry.load()
        except Exception as exc:  # a broken plug-in names itself, rather than failing somewhere later
            raise ConfigError(f"the {group} entry point {entry.name} = {entry.value} does not load: "
                              f"{type(exc).__name__}: {exc}") from exc
        if kind is Study and not isinstance(value, Study):
            value = getattr(value, "STUDY", value)  # a module with a STUDY, as replications/ has
        if not isinstance(value, kind):
            raise ConfigError(f"the {group} entry point {entry.name} = {entry.value} gives a "
                              f"{type(value).__name__}, not a medssl_core.study.{kind.__name__}")
        found.append(value)
    return found


@functools.cache
def plugin_methods() -> tuple[Method, ...]:
    """The method declarations of the installed packages (each module's import registers its class)."""
    from medssl_core.methods import METHODS

    methods = tuple(_load(METHOD_GROUP, Method))
    for m in methods:
        if m.pretrain is not None and m.pretrain.get("name") not in METHODS:
            raise ConfigError(f"plug-in method {m.name!r} names the SSL method {m.pretrain.get('name')!r}, which "
                              f"its package does not register (@medssl_core.methods.register); registered: "
                              f"{sorted(METHODS)}")
    return methods


@functools.cache
def plugin_studies() -> tuple[Study, ...]:
    return tuple(_load(STUDY_GROUP, Study))
