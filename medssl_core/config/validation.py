"""Validation of run settings against the typed models, with errors that name the bad key and the valid ones;
the spec form of a validated model; paths into settings (decisions and overrides name fields by dotted paths)."""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from medssl_core import methods
from medssl_core.common.errors import ConfigError
from medssl_core.config.base import Strict
from medssl_core.config.pretrain import SSLMethod


def spec_form(model: BaseModel) -> dict:
    """``model`` written out in full, less each ``added`` field that holds its ``absent`` value."""
    out = model.model_dump(mode="json")
    _drop_absent(model, out)
    return out


def _drop_absent(model: BaseModel, out: dict) -> None:
    for name, info in type(model).model_fields.items():
        value, extra = getattr(model, name), info.json_schema_extra
        if isinstance(extra, dict) and "absent" in extra and value == extra["absent"]:
            out.pop(name, None)  # a method's options are written out only where a study's plan writes them
        elif isinstance(value, BaseModel):
            _drop_absent(value, out[name])
    if isinstance(model, SSLMethod):  # a method's options, a plain dict here, may hold options added later too
        cls = methods.METHODS.get(model.name)
        if cls is not None:
            _drop_absent(cls.Options.model_validate(model.options), out["options"])


def validate(model: type[Strict], hp: dict, where: str, *, for_spec: bool = False) -> dict:
    """Validate ``hp`` and return it with every default written out (``for_spec``: in its spec form); a
    ConfigError names each bad key."""
    try:
        parsed = model.model_validate(hp)
    except ValidationError as exc:
        raise ConfigError(f"{where}: invalid configuration\n" + _explain(model, exc)) from None
    return spec_form(parsed) if for_spec else parsed.model_dump(mode="json")


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


def dotted_paths(value: dict, prefix: str = "", leaves: Collection[str] = ()) -> dict[str, Any]:
    """Every leaf of nested dicts by its dotted path (``{'a': {'b': 1}}`` -> ``{'a.b': 1}``); a key in ``leaves``
    is kept whole (e.g. a code fingerprint, compared as one thing)."""
    out: dict[str, Any] = {}
    for k, v in value.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and k not in leaves:
            out.update(dotted_paths(v, path, leaves))
        else:
            out[path] = v
    return out


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


def with_method_defaults(method: dict) -> dict:
    """The method's loss arguments and options with their defaults written out (so a decision can name them,
    and a changed default changes the config id)."""
    cls = methods.METHODS.get(method.get("name"))
    if cls is None:
        return method
    return {**method, "loss_kwargs": {**methods.loss_parameters(cls), **method.get("loss_kwargs", {})},
            "options": cls.Options.model_validate(method.get("options", {})).model_dump()}


def check_path(model: type[Strict], dotted: str, where: str) -> None:
    """A decision's ``param`` must name a field of ``model`` (or an argument of a loss, under loss_kwargs)."""
    keys = dotted.split(".")
    models: list[type[BaseModel]] = [model]
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if keys[:i] in (["method", "loss_kwargs"], ["method", "options"]):
            valid = sorted({p for cls in methods.METHODS.values() for p in (
                methods.loss_parameters(cls) if keys[1] == "loss_kwargs" else cls.Options.model_fields)})
            if key in valid and last:
                return
        else:
            valid = sorted({k for m in models for k in m.model_fields})
            if key in valid:
                models = [sub for m in models if key in m.model_fields
                          for sub in _models_in(m.model_fields[key].annotation)]
                if last:
                    return
                if models or keys[:i + 1] in (["method", "loss_kwargs"], ["method", "options"]):
                    continue
                valid = []  # a plain value has no keys below it
        here = ".".join(keys[:i]) or "the run configuration"
        raise ConfigError(f"{where}: param {dotted!r} is not a field ({here} has no {key!r}; valid keys: "
                          f"{', '.join(valid) or 'none'}).")
