"""Run identity. A RunSpec states everything a run's numbers depend on: its settings (hyper-parameters fully
written out, decisions, dataset, profile), its seed, the fingerprint of the code that computes it, the
version of the data it reads and, for an evaluation, the whole spec of the pretraining it uses.

- run id: hash of all of it (the same on every machine);
- config id: hash of all of it but the seed(s): the runs a table may average over;
- settings id: hash without seed, code and data: the same request under other code or data, used to say
  that a recorded run is *stale* rather than merely different.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from medssl_core.common.errors import ConfigError

Kind = Literal["pretrain", "evaluate"]


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, tuples as lists: one text per value on every machine."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"run spec is not plain JSON data ({exc})") from exc


def _hash(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:16]


def _without(d: dict, keys: tuple[str, ...]) -> dict:
    out = {k: v for k, v in d.items() if k not in keys}
    for below in ("pretrain", "start"):
        if out.get(below) is not None:
            out[below] = _without(out[below], keys)
    return out


def _compact(d: dict) -> dict:
    """An unset ``start`` is left out, so that specs from before it existed keep their ids."""
    if d.get("start") is None:
        d.pop("start", None)
    for below in ("pretrain", "start"):
        if d.get(below) is not None:
            _compact(d[below])
    return d


@dataclass(frozen=True)
class RunSpec:
    study: str
    kind: Kind
    dataset: str  # the study's dataset key
    dataset_used: str  # the registry dataset actually read (e.g. a stand-in)
    method: str
    seed: int
    profile: str
    hparams: dict[str, Any] = field(hash=False)  # validated, every default written out (medssl_core.config)
    decisions: dict[str, str] = field(default_factory=dict, hash=False)  # name -> as_published|corrected
    protocol: str | None = None
    fraction: float | None = None
    pretrain: RunSpec | None = None  # the pretraining an evaluation uses, whole
    code: dict[str, str] = field(default_factory=dict, hash=False)  # module -> hash (medssl_core.identity)
    data: str | None = None  # version of the data read (checksums); None when not fingerprinted
    # the evaluation whose fine-tuned backbone this one starts from (EvaluateHP.start_from), whole
    start: RunSpec | None = None

    def to_dict(self) -> dict:
        return _compact(asdict(self))

    def canonical(self) -> str:
        return canonical_json(self.to_dict())

    @property
    def run_id(self) -> str:
        return _hash(self.to_dict())

    @property
    def config_id(self) -> str:
        return _hash(_without(self.to_dict(), ("seed",)))

    @property
    def settings_id(self) -> str:
        return _hash(_without(self.to_dict(), ("seed", "code", "data")))

    @property
    def code_version(self) -> str:
        return _hash(self.code)[:12]

    @property
    def parent(self) -> str | None:
        return self.pretrain.run_id if self.pretrain is not None else None

    @property
    def depends_on(self) -> tuple[str, ...]:
        """The runs whose artifacts this one reads: its pretraining and the evaluation it starts from."""
        return tuple(s.run_id for s in (self.pretrain, self.start) if s is not None)

    @classmethod
    def from_dict(cls, d: dict) -> RunSpec:
        d = dict(d)
        for below in ("pretrain", "start"):
            if d.get(below) is not None:
                d[below] = cls.from_dict(d[below])
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls.from_dict(json.loads(text))

    def replace_pretrain(self, pretrain: RunSpec) -> RunSpec:
        return RunSpec(**{**self.__dict__, "pretrain": pretrain})

    def label(self) -> str:
        parts = [self.dataset_used, self.method, self.protocol or "pretrain"]
        if self.fraction is not None and self.fraction != 1.0:
            parts.append(f"{self.fraction:g}")
        stand_in = " [stand-in weights]" if self.hparams.get("backbone", {}).get("stand_in_weights") else ""
        return "/".join(parts) + f" seed {self.seed}{stand_in}"
