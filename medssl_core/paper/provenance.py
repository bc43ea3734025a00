"""What the runs of a database were made with and where they read their data, as the runs recorded it (table
`environment`): the code (commit, uncommitted changes), devices and torch versions a report names, the data
directory `medssl paper` reads when none is given, and the state of each study's runs (finished, failed, stale)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from medssl_core.data.medmnist_info import MEDMNIST
from medssl_core.data.registry import REGISTRY
from medssl_core.data.sources import _root_name
from medssl_core.plan.stale import staleness_rows
from medssl_core.store.store import connect


def _data_dir_of(path: str) -> str | None:
    """The data directory a recorded file was found in: the folder of a MedMNIST file, the folder above a source's
    root (``<data-dir>/NIH_ChestXray14/...``, ``<data-dir>/mimeta/<id>/...``)."""
    p = Path(path)
    if p.suffix == ".npz" and p.stem.split("_")[0] in MEDMNIST:
        return str(p.parent)
    for info in REGISTRY.values():
        if info.kind in ("medmnist", "merged"):
            continue
        root = f"/{_root_name(info)}"
        if f"{root}/" in f"{path}/":
            return path[:f"{path}/".index(f"{root}/")] or "/"
    return None


def recorded_data_dir(db: Path) -> str | None:
    """The data directory most of the finished runs in ``db`` read their files from, if it still exists: what
    `replicate --data-dir` was (runs record the files they read, not the option)."""
    with connect(db, read_only=True, wait_s=30) as con:
        recorded = con.execute("SELECT e.data_checksums FROM environment e JOIN runs r USING (run_id) "
                               "WHERE r.status = 'ok' AND e.data_checksums IS NOT NULL").fetchall()
    counts = Counter(d for (checksums,) in recorded for d in {_data_dir_of(p) for p in json.loads(checksums)} if d)
    return next((d for d, _ in counts.most_common() if Path(d).is_dir()), None)


def environments(db: Path, run_ids: list[str]) -> list[dict]:
    """The code and environment ``run_ids`` ran in: one entry per (commit, uncommitted changes, torch, device) with
    its number of runs, most runs first."""
    with connect(db, read_only=True, wait_s=30) as con:
        rows = con.execute("SELECT git_commit, git_dirty, torch, coalesce(e.device_name, r.device), count(*) "
                           "FROM runs r LEFT JOIN environment e USING (run_id) WHERE run_id IN (SELECT unnest(?)) "
                           "GROUP BY ALL ORDER BY count(*) DESC, 1, 3, 4", [sorted(run_ids)]).fetchall()
    return [{"commit": c, "dirty": d, "torch": t, "device": dev, "runs": n} for c, d, t, dev, n in rows]


def describe_environments(entries: list[dict]) -> str:
    """'code 092a17eb (clean), torch 2.4.1, cpu (2 threads): 10 runs; ...', entries of ``environments`` merged."""
    counts: Counter = Counter()
    for e in entries:
        code = f"code {e['commit'][:8]}" if e["commit"] else "code of unknown commit"
        state = " (uncommitted changes)" if e["dirty"] else " (clean)" if e["dirty"] is False else ""
        counts[f"{code}{state}, torch {e['torch'] or '?'}, {e['device'] or 'unknown device'}"] += e["runs"]
    return "; ".join(f"{what}: {n} run{'s' if n > 1 else ''}" for what, n in counts.most_common())


def run_states(db: Path, data_dir=None) -> dict[str, dict[str, int]]:
    """study -> runs 'ok', 'failed' (any other status) and 'stale' (finished, recorded under code or data that has
    changed since: left out of the tables unless kept with `replicate --reuse-stale`, then 'kept')."""
    with connect(db, read_only=True, wait_s=30) as con:
        runs = con.execute("SELECT study, run_id, status, spec_json FROM runs").fetchall()
        kept = {r for (r,) in con.execute("SELECT run_id FROM reused").fetchall()}
    stale = {run_id for run_id, is_stale, _ in staleness_rows([(r, s) for _, r, status, s in runs if status == "ok"],
                                                              data_dir) if is_stale}
    out: dict[str, dict[str, int]] = {}
    for study, run_id, status, _ in runs:
        counts = out.setdefault(study, dict.fromkeys(("ok", "failed", "stale", "kept"), 0))
        counts["ok" if status == "ok" else "failed"] += 1
        counts["stale"] += run_id in stale
        counts["kept"] += run_id in stale and run_id in kept
    return out
