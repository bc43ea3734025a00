"""Run records: the JSON file each finished run leaves behind; the database can be rebuilt from them."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunRecord:
    run: dict[str, Any]  # columns of the runs table
    params: list[dict] = field(default_factory=list)  # {kind, name, value}
    metrics: list[dict] = field(default_factory=list)  # {split, name, value}
    curves: list[dict] = field(default_factory=list)  # {step, name, value}
    environment: dict[str, Any] = field(default_factory=dict)
    artifacts: list[dict] = field(default_factory=list)  # {name, path, sha256, bytes}

    @property
    def run_id(self) -> str:
        return self.run["run_id"]

    @property
    def ok(self) -> bool:
        return self.run["status"] == "ok"

    def metric(self, name: str, split: str = "test") -> float | None:
        return next((m["value"] for m in self.metrics if m["name"] == name and m["split"] == split), None)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        return cls(**json.loads(text))


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_record(records_dir: Path, record: RunRecord) -> Path:
    path = Path(records_dir) / f"{record.run_id}.json"
    write_atomic(path, record.to_json())
    return path


def load_records(records_dir: Path) -> list[RunRecord]:
    return [RunRecord.from_json(p.read_text()) for p in sorted(Path(records_dir).glob("*.json"))]
