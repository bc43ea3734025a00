"""Run identity: a run spec's canonical JSON form and its hash, the run id (the same on every machine)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from medssl_core.errors import ConfigError

Kind = Literal["pretrain", "evaluate"]


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, tuples as lists: one text per value on every machine."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"run spec is not plain JSON data ({exc})") from exc


@dataclass(frozen=True)
class RunSpec:
    study: str
    kind: Kind
    dataset: str  # the study's dataset key
    dataset_used: str  # the registry dataset actually read (e.g. a stand-in)
    method: str
    seed: int
    profile: str
    hparams: dict[str, Any] = field(hash=False)  # fully resolved; everything the run reads
    decisions: dict[str, str] = field(default_factory=dict, hash=False)  # name -> as_published|corrected
    protocol: str | None = None
    fraction: float | None = None
    parent: str | None = None  # run id of the pretraining an evaluation uses

    def canonical(self) -> str:
        return canonical_json(asdict(self))

    @property
    def run_id(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:16]

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls(**json.loads(text))

    def label(self) -> str:
        parts = [self.dataset_used, self.method, self.protocol or "pretrain"]
        if self.fraction is not None and self.fraction != 1.0:
            parts.append(f"{self.fraction:g}")
        return "/".join(parts) + f" seed {self.seed}"
