"""Run records: the JSON file each finished run leaves behind; the database can be rebuilt from them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medssl_core.common.atomic import write_atomic

# Artifacts that later steps read by name (the paper, Grad-CAM): where a run keeps them is in its record.
TEST_FEATURES = "test_features.npz"  # a kNN evaluation's test features and labels (t-SNE)
TEST_SCORES = "test_scores.npz"  # a fitted evaluation's test probabilities and labels (ROC curves)
GRADCAM = "gradcam.npz"  # a fitted evaluation's Grad-CAM maps, images and lung masks (protocol.gradcam)
EMBEDDING = "embedding.npz"  # a fitted evaluation's 2-D test embedding and categories (protocol.embedding)
FINETUNED = "finetuned.pt"  # a fitted evaluation's selected model {'backbone', 'head'} (fit.save_weights)


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


def save_record(records_dir: Path, record: RunRecord) -> Path:
    path = Path(records_dir) / f"{record.run_id}.json"
    write_atomic(path, record.to_json())
    return path


def load_records(records_dir: Path) -> tuple[list[RunRecord], list[tuple[Path, str]]]:
    """Every readable record, and (file, what is wrong) for each one that is not."""
    records, unreadable = [], []
    for path in sorted(Path(records_dir).glob("*.json")):
        try:
            record = RunRecord.from_json(path.read_text())
            if not isinstance(record.run, dict) or "run_id" not in record.run or "status" not in record.run:
                raise ValueError("it has no run_id/status")
            records.append(record)
        except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
            unreadable.append((path, f"{type(exc).__name__}: {exc}"))
    return records, unreadable
