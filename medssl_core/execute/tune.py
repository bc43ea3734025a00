"""`medssl tune`: Optuna over the hyper-parameters a study leaves open (``Study.search_space``), for one method,
protocol, variant and seed, on a validation metric only (never test).

Each trial is planned and run like any run (``grid.expand`` with the sampled values as overrides, so they are in
its settings and its identity; a trial that samples values already run reuses that run) and recorded in DuckDB's
``trials`` table: the Optuna study, the trial number, its parameters, the evaluation run it scored and the value.
Optuna's own state is a journal file (``JournalStorage(JournalFileBackend)``; its RDB storage does not run on
DuckDB), so an interrupted search resumes where it stopped. The best values can be written as a JSON overrides file
that ``medssl replicate --overrides`` applies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medssl_core.common.atomic import write_atomic
from medssl_core.common.errors import ConfigError
from medssl_core.execute.local import execute
from medssl_core.plan.grid import Plan, expand
from medssl_core.plan.study import Study, Tunable
from medssl_core.run.context import Context
from medssl_core.store import ResultsStore, run_sql


def _import_optuna():
    try:
        import optuna
    except ImportError as exc:
        raise ConfigError("medssl tune needs Optuna: pip install 'medssl[tune]' (or pip install optuna).") from exc
    return optuna


def overrides_of(params: dict[str, Any], method: str, protocol: str) -> dict:
    """Sampled values as `expand` overrides for ``method``'s runs only, the evaluation's for ``protocol`` only:
    {'pretrain.train.optimizer.lr': 1e-3} -> {'methods': {method: {'pretrain': {'train': {'optimizer': {'lr':
    1e-3}}}}}}; 'evaluate.x' -> {'methods': {method: {'protocols': {protocol: {'x': ...}}}}}."""
    scoped: dict = {}
    for path, value in params.items():
        stage, *parents, leaf = path.split(".")
        node = scoped.setdefault("pretrain", {}) if stage == "pretrain" else \
            scoped.setdefault("protocols", {}).setdefault(protocol, {})
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return {"methods": {method: scoped}}


def _suggest(trial, t: Tunable):
    if t.choices is not None:
        return trial.suggest_categorical(t.path, list(t.choices))
    return trial.suggest_float(t.path, t.low, t.high, log=t.log)


def _needed(plan: Plan, method: str, protocol: str, fraction: float) -> str:
    """Cut the plan to the one evaluation a trial scores and the runs it depends on; that evaluation's run id."""
    target = [s for s in plan.evaluate if s.method == method and s.protocol == protocol and s.fraction == fraction]
    if len(target) != 1:
        raise ConfigError(f"a trial scores one evaluation; {method}/{protocol} at fraction {fraction} gives "
                          f"{len(target)} (name --dataset, and a fraction the profile plans)")
    keep, frontier = set(), [target[0].run_id]
    by_id = {s.run_id: s for s in plan.specs}
    while frontier:
        rid = frontier.pop()
        if rid in by_id and rid not in keep:
            keep.add(rid)
            frontier += list(by_id[rid].depends_on)
    plan.specs = [s for s in plan.specs if s.run_id in keep]
    return target[0].run_id


@dataclass
class TuneResult:
    name: str  # the Optuna study
    best_trial: int
    best_value: float
    best_params: dict[str, Any]
    trials: int


def tune(study: Study, profile: str, method: str, protocol: str, *, trials: int, store: ResultsStore, ctx: Context,
         journal: Path, seed: int = 0, dataset: str | None = None, variant: str = "corrected",
         fraction: float = 1.0, device=None, allow_download: bool = True) -> TuneResult:
    optuna = _import_optuna()
    space = [t for t in study.search_space if t.methods is None or method in t.methods]
    if not space:
        raise ConfigError(f"{study.name} declares nothing open to tune for {method!r} (Study.search_space); "
                          f"tunable: {sorted({m for t in study.search_space for m in (t.methods or ['any'])})}")
    name = f"{study.name}/{profile}/{method}/{protocol}/{dataset or 'all'}/{variant}/{fraction:g}/seed{seed}"
    journal.parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    search = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    # seeded by the trials already run: a resumed search samples on (the same seed again would repeat them)
    search.sampler = optuna.samplers.TPESampler(seed=seed + len(search.trials))
    objective_name = f"val.{study.main_metric}"

    def objective(trial) -> float:
        params = {t.path: _suggest(trial, t) for t in space}
        plan = expand(study, profile, seeds=[seed], methods=[method], protocols=[protocol],
                      datasets=[dataset] if dataset else None, variant_names=[variant], data_dir=ctx.data_dir,
                      allow_download=allow_download, device=device, overrides=overrides_of(params, method, protocol))
        run_id = _needed(plan, method, protocol, fraction)
        summary = execute(plan, store, ctx, progress=False)
        if summary.failed:
            raise RuntimeError(f"trial {trial.number}: {summary.failed[0].run['error'].splitlines()[0]}")
        if store.run_statuses().get(run_id) != "ok":  # failed in an earlier session (not retried)
            raise RuntimeError(f"trial {trial.number}: its run {run_id} is recorded as failed")
        rows = run_sql(store.db_path, "SELECT value FROM metrics WHERE run_id = ? AND split = 'val' AND name = ?",
                       params=[run_id, study.main_metric])[1]
        if not rows:
            raise ConfigError(f"{protocol} records no validation {study.main_metric}; tune needs one (never test)")
        value = float(rows[0][0])
        store.append("trials", [{"optuna_study": name, "trial": trial.number, "run_id": run_id,
                                 "params": json.dumps(params, sort_keys=True), "objective": objective_name,
                                 "value": value, "finished_at": datetime.now(timezone.utc)}])
        return value

    search.optimize(objective, n_trials=trials, catch=(RuntimeError,))
    done = [t for t in search.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise ConfigError(f"no trial of {name} finished; see the failed runs (`medssl results runs --status failed`)")
    return TuneResult(name, search.best_trial.number, search.best_value, search.best_params, len(done))


def write_overrides(result: TuneResult, method: str, protocol: str, path: Path) -> None:
    """The best values as overrides for `medssl replicate --overrides FILE` (the method's runs only)."""
    write_atomic(path, (json.dumps({"tuned": result.name, "best_trial": result.best_trial,
                                    "best_value": result.best_value,
                                    "overrides": overrides_of(result.best_params, method, protocol)},
                                   indent=2) + "\n").encode())
