"""The rows every table and figure is built from: the metrics of the accepted evaluation runs, each with its run's
settings, environment and variant, and the reported numbers by cell."""

from __future__ import annotations

import copy
from collections.abc import Collection
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from medssl_core.paper.labels import (
    CELL_SOURCE_SQL,
)
from medssl_core.plan.runspec import RunSpec, canonical_json
from medssl_core.plan.study import Reported, Study
from medssl_core.store.store import connect


def load_rows(study: Study, db: Path, accepted: dict[str, str], tuned: Collection[str] = ()) -> list[dict]:
    """Metric rows of the accepted evaluation runs, each with what the tables need of its run: 'kept_stale' (''
    or why it is shown although stale), 'tuned' (it ran `medssl tune`'s best values), 'precision', 'environment'
    (torch version, device, precision) and 'decision_free' (``decision_free``)."""
    with connect(db, read_only=True, wait_s=30) as con:
        cur = con.execute(
            f"""SELECT run_id, config_id, dataset, {CELL_SOURCE_SQL} AS dataset_used, method, protocol, fraction,
                      seed, profile, decisions, split, metric, value FROM run_metrics
               WHERE study = ? AND kind = 'evaluate' AND run_id IN (SELECT unnest(?))""",
            [study.name, sorted(accepted)])
        cols = [d[0] for d in cur.description]
        metrics = cur.fetchall()
        runs = con.execute(
            """SELECT r.run_id, r.spec_json, e.torch, coalesce(e.device_name, r.device), p.value FROM runs r
               LEFT JOIN environment e USING (run_id)
               LEFT JOIN params p ON p.run_id = r.run_id AND p.kind = 'runtime' AND p.name = 'bf16'
               WHERE r.run_id IN (SELECT unnest(?))""", [sorted({m[0] for m in metrics})]).fetchall()
    about = {}
    for run_id, spec_json, torch_version, device, bf16 in runs:
        spec = RunSpec.from_json(spec_json)
        ran_bf16 = bf16 == "True" if bf16 is not None else spec.hparams.get("amp") == "bf16"  # as run, else planned
        precision = "bf16" if ran_bf16 else "fp32"
        device_kind = (device or "unknown device").split(" (")[0]  # 'cpu (2 threads)': the threads are no device
        about[run_id] = {"kept_stale": accepted[run_id], "tuned": run_id in tuned, "precision": precision,
                         "environment": f"torch {torch_version or '?'}, {device_kind}, {precision}",
                         "decision_free": decision_free(study, spec)}
    return [{**dict(zip(cols, r)), **about[r[0]]} for r in metrics]


def decision_free(study: Study, spec: RunSpec) -> str:
    """A run's settings apart from the study's decisions (and from its seed, code, data and the run it starts
    from, which a decision may add): equal for runs that differ only in which decisions are corrected."""
    def strip(d: dict) -> dict:
        hparams = copy.deepcopy(d["hparams"])
        for decision in study.decisions:
            if decision.stage in ("data", d["kind"]):
                for path in decision.params:
                    *parents, leaf = path.split(".")
                    node = hparams
                    for key in parents:
                        node = node.get(key) if isinstance(node, dict) else None
                    if isinstance(node, dict):
                        node.pop(leaf, None)
        kept = {k: v for k, v in d.items() if k not in ("seed", "code", "data", "decisions", "start", "pretrain")}
        return {**kept, "hparams": hparams, "pretrain": strip(d["pretrain"]) if d.get("pretrain") else None}

    return canonical_json(strip(spec.to_dict()))


def _titles(study: Study) -> tuple[dict, dict, dict]:
    return ({m.name: m.title for m in study.methods}, {p.name: p.title for p in study.protocols},
            {d.key: d.title for d in study.datasets})


def _order(study: Study, method: str, protocol: str) -> tuple[int, int]:
    methods, protocols = [m.name for m in study.methods], [p.name for p in study.protocols]
    return (methods.index(method) if method in methods else len(methods),
            protocols.index(protocol) if protocol in protocols else len(protocols))


def reported_by_cell(study: Study) -> dict[tuple, Reported]:
    """(dataset, method, protocol, metric, fraction) -> the source's number for that table cell: the first
    declared wins, as in every table."""
    out: dict[tuple, Reported] = {}
    for r in study.reported:
        out.setdefault((r.dataset, r.method, r.protocol, r.metric, r.fraction or 1.0), r)
    return out
