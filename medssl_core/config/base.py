"""Typed, strict run configurations: every key a study, profile or decision sets must name a real field.

pydantic (v2) rather than hand-validated dataclasses: it gives nested models that refuse unknown keys
(`extra="forbid"`), type checks with the exact path of the bad key, discriminated unions for the protocol
kinds, and a `model_dump` that writes every default explicitly, so a run's spec states each value it used
and a changed default changes the spec (and the config id) instead of the numbers silently.

One exception keeps recorded runs comparable as the engine grows: an option added after runs were recorded
is declared with ``added(...)``, whose value must be the behaviour from before the option existed. A spec
states it only when a run sets it to something else (``spec_form``), so adding an option for a new study
leaves every recorded run's settings id as it was (tests/test_trust.py pins each such value)."""

from __future__ import annotations

import dataclasses
import typing

from pydantic import BaseModel, ConfigDict, Field, create_model


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def added(absent, **kwargs):
    """A field added after runs were recorded; ``absent`` (also its default) is what runs did before it."""
    return Field(default=absent, json_schema_extra={"absent": absent}, **kwargs)


def strict_model(name: str, *sources: type, doc: str) -> type[Strict]:
    """A strict model with the fields (types, defaults) of the dataclasses ``sources``: options a lower layer
    defines once (the augmentation's), typed and checked here."""
    fields: dict[str, tuple] = {}
    for source in sources:
        hints = typing.get_type_hints(source)
        fields |= {f.name: (hints[f.name], f.default) for f in dataclasses.fields(source)}
    return create_model(name, __base__=Strict, __doc__=doc, __module__=__name__, **fields)
