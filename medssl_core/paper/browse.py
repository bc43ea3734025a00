"""Recorded runs read from a terminal: one run whole (`medssl results show`), two runs side by side (`medssl results
compare`), the run list's filters and each run's variant in the words of the paper's tables. The ``*_data``
functions return plain dicts (the API hands them to notebooks); ``format_*`` turn them into text."""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

from medssl_core.common.errors import ConfigError
from medssl_core.config.validation import dotted_paths
from medssl_core.paper.labels import in_variant, parse_decisions, variant_label
from medssl_core.paper.selection import Trial, select
from medssl_core.plan.identity import differing
from medssl_core.plan.runspec import RunSpec
from medssl_core.plan.stale import staleness_rows
from medssl_core.plan.study import AS_PUBLISHED, CORRECTED, EACH, Decision
from medssl_core.store.store import connect

CODE = "code"  # a spec's code fingerprint: definition -> digest, shown and compared as one thing
SPARKS = "▁▂▃▄▅▆▇█"
TUNED = "tuned"  # a run of `medssl tune`'s best values (`replicate --overrides`): its own variant in the paper
ABSENT = "(not in its spec)"  # a setting one run of a comparison has and the other has not
ENVIRONMENT = ("torch", "device", "git_commit", "git_dirty", "python", "hostname", "platform", "cuda",
               "threads")


def declared_decisions(study_names: Iterable[str]) -> dict[str, Sequence[Decision]]:
    """Each registered study's decisions (what their sides are called); a study no longer registered: none."""
    from medssl_core.plan.catalog import studies

    known = studies()
    return {name: known[name].decisions if name in known else () for name in set(study_names)}


def run_variants(rows: Sequence[tuple[str, str, str | None]], tuned: Collection[str] = ()) -> list[tuple[str, str]]:
    """(run_id, variant) of (run_id, study, decisions) rows, worded as the paper's tables word them; the runs in
    ``tuned`` (`tuned_runs`) are 'tuned'."""
    declared = declared_decisions(study for _, study, _ in rows)
    return [(rid, TUNED if rid in tuned else variant_label(parse_decisions(text), declared[study]))
            for rid, study, text in rows]


def tuned_runs(recorded: Sequence[tuple[str, str, str, str | None]], trials: Sequence[Trial]) -> set[str]:
    """The runs of (run_id, study, status, spec_json) rows that ran `medssl tune`'s best values, by the paper's
    rule (``selection.select``); only the studies with trials are planned for it."""
    from medssl_core.plan.catalog import studies

    searched = {search.split("/")[0] for search, *_ in trials}
    known, out = studies(), set()
    for name in searched & set(known):
        mine = [(rid, status, spec) for rid, study, status, spec in recorded if study == name]
        of_study = [t for t in trials if t[0].split("/")[0] == name]
        out |= set(select(known[name], mine, set(), trials=of_study, include_stale=True).tuned)
    return out


def in_variant_choice(decisions: str | None, choice: str) -> bool:
    """Whether a run belongs to ``choice`` (as_published, corrected, each: both sides among its decisions); a run
    with no decisions belongs to every whole variant, as the planner shares it between them."""
    parsed = parse_decisions(decisions)
    if choice == EACH:
        return set(parsed.values()) == {AS_PUBLISHED, CORRECTED}
    return in_variant(parsed, choice)


def shorten(text: str | None, width: int) -> str:
    """``text`` on one line of at most ``width`` characters, cut between words with an ellipsis."""
    return textwrap.shorten(text or "", width, placeholder=" …")


def resolve_run(con, prefix: str, db: Path) -> str:
    """The run id that ``prefix`` starts; none or several is an error naming the candidates."""
    if not prefix.strip():
        raise ConfigError("an empty run id: give a run id or its first characters (`medssl results runs` lists them)")
    found = con.execute("SELECT run_id, kind, concat_ws('/', dataset_used, method, protocol) || ' seed ' || seed "
                        "FROM runs WHERE starts_with(run_id, ?) ORDER BY run_id LIMIT 11", [prefix]).fetchall()
    if not found:
        raise ConfigError(f"no run id in {db} starts with {prefix!r}: `medssl results runs --db {db}` lists them")
    if len(found) > 1:
        listed = "; ".join(f"{rid} ({kind} {label})" for rid, kind, label in found[:10])
        more = "; …" if len(found) > 10 else ""
        raise ConfigError(f"run id prefix {prefix!r} is ambiguous in {db}: {listed}{more} start with it; give more "
                          "characters")
    return found[0][0]


CELL = ("kind", "study", "profile", "dataset", "dataset_used", "pretrain_dataset", "method", "protocol", "fraction",
        "seed")  # what a run of one variant shares with its counterpart of the other


def other_variant(db: Path, prefix: str) -> str:
    """The run of the same cell and seed as ``prefix``'s run with every decision on the other side (a cell's two
    variants, for ``compare``); none, or a run without decisions, is an error that says so."""
    with connect(db, read_only=True, wait_s=5.0) as con:
        run_id = resolve_run(con, prefix, db)
        cols = ", ".join(CELL)
        row = con.execute(f"SELECT {cols}, decisions FROM runs WHERE run_id = ?", [run_id]).fetchone()
        decisions = parse_decisions(row[-1])
        if not decisions:
            raise ConfigError(f"run {run_id} records no decision: it belongs to both variants, there is no other")
        flipped = {k: CORRECTED if v == AS_PUBLISHED else AS_PUBLISHED for k, v in decisions.items()}
        same = " AND ".join(f"{c} IS NOT DISTINCT FROM ?" for c in CELL)
        found = [rid for rid, text in con.execute(f"SELECT run_id, decisions FROM runs WHERE {same} ORDER BY run_id",
                                                  list(row[:-1])).fetchall() if parse_decisions(text) == flipped]
    if not found:
        raise ConfigError(f"no run of {run_id}'s cell and seed in {db} has every decision on the other side: run "
                          "the other variant (`medssl replicate ... --variants as_published,corrected`)")
    return found[0]


def _spec(spec_json: str | None) -> dict:
    try:
        spec = json.loads(spec_json or "{}")
    except ValueError:
        return {}
    return spec if isinstance(spec, dict) else {}


def _readable_spec(spec: dict) -> dict:
    """The spec with its code fingerprint summed up in one line, and the runs it reads (its pretraining, the
    evaluation it starts from) named by their ids: each is shown on its own."""
    out = {}
    for key, value in spec.items():
        if key == CODE and isinstance(value, dict):
            out[key] = f"{len(value)} definitions fingerprinted"
        elif key in ("pretrain", "start") and isinstance(value, dict):
            try:
                out[key] = f"run {RunSpec.from_dict(value).run_id} (`medssl results show` it for its settings)"
            except (TypeError, ValueError):
                out[key] = value
        else:
            out[key] = value
    return out


def _curve(name: str, steps: list[int], values: list[float]) -> dict:
    finite = [v for v in values if math.isfinite(v)]
    return {"name": name, "points": len(values), "first_step": steps[0], "last_step": steps[-1],
            "first": values[0], "min": min(finite, default=None), "max": max(finite, default=None),
            "last": values[-1], "values": values}


def curve_figure(paper_dir: str | Path | None, run: dict) -> str | None:
    """The paper's pretraining-curves figure that draws this run's study and profile, where `medssl paper` wrote
    one under ``paper_dir`` (its --out)."""
    if paper_dir is None or run["kind"] != "pretrain":
        return None
    path = Path(paper_dir) / run["study"] / run["profile"] / "pretraining_curves.png"
    return str(path) if path.is_file() else None


def show_data(db: Path, prefix: str, *, data_dir: str | None = None, paper_dir: str | Path | None = None) -> dict:
    """Everything recorded about one run (``prefix``: its id or the first characters of it), as plain data."""
    with connect(db, read_only=True, wait_s=5.0) as con:
        run_id = resolve_run(con, prefix, db)
        cur = con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id])
        run = dict(zip([d[0] for d in cur.description], cur.fetchone()))
        metrics = con.execute("SELECT split, name, value FROM metrics WHERE run_id = ? ORDER BY split, name",
                              [run_id]).fetchall()
        curve_rows = con.execute("SELECT name, step, value FROM curves WHERE run_id = ? ORDER BY name, step",
                                 [run_id]).fetchall()
        artifacts = con.execute("SELECT name, path, bytes FROM artifacts WHERE run_id = ? ORDER BY name",
                                [run_id]).fetchall()
        cur = con.execute("SELECT * FROM environment WHERE run_id = ?", [run_id])
        env_row = cur.fetchone()
        environment = dict(zip([d[0] for d in cur.description], env_row)) if env_row else {}
    environment["device"] = run["device"]
    declared = {d.name: d for d in declared_decisions([run["study"]])[run["study"]]}
    decisions = [{"name": name, "value": side,
                  "label": declared[name].label(side) if name in declared else side.replace("_", " "),
                  "settings": dict(declared[name].settings(side)) if name in declared else {}}
                 for name, side in sorted(parse_decisions(run["decisions"]).items())]
    series: dict[str, tuple[list[int], list[float]]] = {}
    for name, step, value in curve_rows:
        steps, values = series.setdefault(name, ([], []))
        steps.append(step)
        values.append(value)
    (_, stale, why), = staleness_rows([(run_id, run["spec_json"])], data_dir)
    return {
        "run_id": run_id, "kind": run["kind"], "study": run["study"], "profile": run["profile"],
        "status": run["status"], "error": run["error"], "config_id": run["config_id"],
        "started_at": str(run["started_at"]), "finished_at": str(run["finished_at"]), "wall_s": run["wall_s"],
        "peak_mem_mb": run["peak_mem_mb"],
        "variant": variant_label(parse_decisions(run["decisions"]), list(declared.values())),
        "settings": _spec(run["spec_json"]),
        "decisions": decisions,
        "metrics": {split: {name: value for s, name, value in metrics if s == split}
                    for split in dict.fromkeys(s for s, _, _ in metrics)},
        "curves": [_curve(name, steps, values) for name, (steps, values) in series.items()],
        "curve_figure": curve_figure(paper_dir, run),
        "artifacts": [{"name": name, "path": path, "bytes": size, "exists": bool(path) and Path(path).exists()}
                      for name, path, size in artifacts],
        "environment": {k: environment.get(k) for k in ENVIRONMENT if environment.get(k) is not None},
        "stale": stale, "stale_why": why,
    }


def compare_data(db: Path, a: str, b: str, *, data_dir: str | None = None) -> dict:
    """Two runs side by side: the settings that differ (dotted paths; a code fingerprint as the definitions that
    differ) and every metric of either with b − a."""
    runs = [show_data(db, prefix, data_dir=data_dir) for prefix in (a, b)]
    if runs[0]["run_id"] == runs[1]["run_id"]:
        raise ConfigError(f"{a!r} and {b!r} name the same run {runs[0]['run_id']}: give two different runs")
    flat = [dotted_paths(r["settings"], leaves=(CODE,)) for r in runs]
    settings = []
    for path in sorted(set(flat[0]) | set(flat[1])):
        va, vb = flat[0].get(path, ABSENT), flat[1].get(path, ABSENT)
        if va == vb:
            continue
        if path.split(".")[-1] == CODE and isinstance(va, dict) and isinstance(vb, dict):
            names = differing(va, vb)
            settings.append({"path": path, "a": f"{len(names)} definitions differ", "b": ", ".join(names)})
        else:
            settings.append({"path": path, "a": va, "b": vb})
    keys = sorted({(split, m) for r in runs for split, by_name in r["metrics"].items() for m in by_name})
    metrics = []
    for split, metric in keys:
        va, vb = (r["metrics"].get(split, {}).get(metric) for r in runs)
        diff = vb - va if va is not None and vb is not None else None
        metrics.append({"split": split, "metric": metric, "a": va, "b": vb, "diff": diff})
    about = [{k: r[k] for k in ("run_id", "kind", "study", "profile", "status", "variant", "stale", "stale_why")}
             for r in runs]
    return {"a": about[0], "b": about[1], "settings": settings, "metrics": metrics}


# -- text ---------------------------------------------------------------------------------------------------------
def sparkline(values: Sequence[float], width: int = 32) -> str:
    """Values as block characters, lowest ▁ to highest █; at most ``width`` (evenly picked) characters."""
    if len(values) > width:
        values = [values[round(i * (len(values) - 1) / (width - 1))] for i in range(width)]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "?" * len(values)
    low, high = min(finite), max(finite)
    span = (high - low) or 1.0
    return "".join(SPARKS[round((v - low) / span * (len(SPARKS) - 1))] if math.isfinite(v) else "?"
                   for v in values)


def tree(value: Any, indent: int = 0) -> list[str]:
    """Nested dicts as indented 'key: value' lines; lists of plain values on one line."""
    lines, pad = [], "  " * indent
    for key, item in value.items():
        if isinstance(item, dict) and item:
            lines.append(f"{pad}{key}:")
            lines += tree(item, indent + 1)
        elif isinstance(item, list) and any(isinstance(v, dict) for v in item):
            lines.append(f"{pad}{key}:")
            lines += tree({f"[{i}]": v for i, v in enumerate(item)}, indent + 1)
        else:
            lines.append(f"{pad}{key}: {_text(item)}")
    return lines


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _section(title: str, lines: list[str]) -> list[str]:
    return ["", f"{title}:", *("  " + line for line in lines)]


def format_show(run: dict) -> str:
    lines = [f"run {run['run_id']}  {run['kind']}  {run['study']} [{run['profile']}]  variant: {run['variant']}",
             f"status: {run['status']}" + (f"  error: {run['error']}" if run["error"] else ""),
             "stale: " + (f"yes, {run['stale_why']}" if run["stale"] else "no (recorded under the current code"
                                                                          " and data)"),
             f"config {run['config_id']}; finished {run['finished_at']}; wall {_text(run['wall_s'])} s; "
             f"peak memory {_text(run['peak_mem_mb'])} MB"]
    lines += _section("settings", tree(_readable_spec(run["settings"])) or ["- (no spec recorded)"])
    lines += _section("decisions", [f"{d['name']}: {d['label']}" + (" (" + ", ".join(
        f"{path} = {_text(value)}" for path, value in d["settings"].items()) + ")" if d["settings"] else "")
        for d in run["decisions"]]
                      or ["- (none: the study's decisions do not concern this run)"])
    splits = list(run["metrics"])
    names = sorted({n for by_name in run["metrics"].values() for n in by_name})
    table = [[n, *(_text(run["metrics"][s].get(n)) for s in splits)] for n in names]
    lines += _section("metrics", tabulate(table, ["metric", *splits], disable_numparse=True).splitlines() if table
                      else ["- (none)"])
    curves = [[c["name"], sparkline(c["values"]), f"{c['first_step']}-{c['last_step']} ({c['points']})",
               _text(c["first"]), _text(c["min"]), _text(c["max"]), _text(c["last"])] for c in run["curves"]]
    curve_lines = tabulate(curves, ["curve", "shape", "steps", "first", "min", "max", "last"]).splitlines()
    if run["curve_figure"]:
        curve_lines.append(f"figure: {run['curve_figure']}")
    lines += _section("curves", curve_lines if curves else ["- (none)"])
    arts = [[a["name"], a["path"], _text(a["bytes"]), "yes" if a["exists"] else "MISSING"] for a in run["artifacts"]]
    lines += _section("artifacts", tabulate(arts, ["name", "path", "bytes", "exists"]).splitlines() if arts
                      else ["- (none)"])
    lines += _section("environment", [f"{k}: {_text(v)}" for k, v in run["environment"].items()] or ["- (none)"])
    return "\n".join(lines)


def format_compare(comparison: dict) -> str:
    a, b = comparison["a"], comparison["b"]
    lines = [f"a: {a['run_id']}  {a['kind']}  {a['study']} [{a['profile']}]  {a['variant']}  {a['status']}"
             + ("  stale" if a["stale"] else ""),
             f"b: {b['run_id']}  {b['kind']}  {b['study']} [{b['profile']}]  {b['variant']}  {b['status']}"
             + ("  stale" if b["stale"] else "")]
    settings = [[s["path"], textwrap.fill(_text(s["a"]), 40), textwrap.fill(_text(s["b"]), 40)]
                for s in comparison["settings"]]
    lines += _section("settings that differ", tabulate(settings, ["setting", "a", "b"], disable_numparse=True)
                      .splitlines() if settings else ["- (none: the same settings)"])
    metrics = [[m["split"], m["metric"], _text(m["a"]), _text(m["b"]),
                "-" if m["diff"] is None else f"{m['diff']:+.4g}"] for m in comparison["metrics"]]
    lines += _section("metrics", tabulate(metrics, ["split", "metric", "a", "b", "b − a"], disable_numparse=True)
                      .splitlines() if metrics else ["- (none)"])
    return "\n".join(lines)
