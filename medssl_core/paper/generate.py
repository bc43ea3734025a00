"""Paper outputs of a study, generated from the results database: tables (Markdown + LaTeX via tabulate)
and figures (matplotlib, PNG + PDF). Every table cell is listed with its run ids in cells.csv."""

from __future__ import annotations

import copy
import csv
import json
import math
from collections import Counter, defaultdict
from collections.abc import Collection, Iterator, Sized
from itertools import product
from pathlib import Path
from typing import TypeVar

import duckdb
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from medssl_core.common.errors import MedsslError, StoreError
from medssl_core.paper import output as paper_output
from medssl_core.paper.analysis import (
    embedding_figures,
    figure_runs,
    gradcam_figures,
    per_label_tables,
    reported_per_label,
    roc_figures,
    slug,
)
from medssl_core.paper.classes import class_names, confusion_figures, recall_table
from medssl_core.paper.labels import (
    CELL_SOURCE_SQL,
    format_fraction,
    in_variant,
    parse_decisions,
    secondary_metric,
    variant_label,
    variant_title,
)
from medssl_core.paper.output import (
    EnvironmentNotes,
    config_tags,
    format_mean_std,
    mean_std,
    mixed_environments,
    save_figure,
    tagged,
)
from medssl_core.paper.selection import STALE, select
from medssl_core.plan.runspec import RunSpec, canonical_json
from medssl_core.plan.stale import summarise
from medssl_core.plan.study import AS_DECLARED, AS_PUBLISHED, CORRECTED, Decision, Reported, Study
from medssl_core.store.records import TEST_FEATURES
from medssl_core.store.store import connect

SizedT = TypeVar("SizedT", bound=Sized)


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


def main_tables(study: Study, rows: list[dict], metric: str) -> tuple[dict[str, tuple[list, list, str]], list[list]]:
    """Per variant: (headers, table rows, footnote of the cells that mix environments) of methods x protocols by
    dataset; plus cells for cells.csv.

    A cell is the mean of the runs of exactly one config id (same settings, code and data; seeds differ). A
    row key that meets more than one config id in a dataset (e.g. bf16 runs beside fp32 ones, tuned values, a
    kept stale run beside a current one) gets one row per config id, labelled by what tells it apart
    (``config_tags``).
    """
    methods, protocols, _ = _titles(study)
    second = secondary_metric(metric)
    reported = reported_by_cell(study)
    test = [r for r in rows if r["split"] == "test"]
    collapsed = {r["run_id"] for r in test if r["metric"] == "collapsed" and r["value"] == 1}
    datasets = sorted({(r["dataset"], r["dataset_used"]) for r in test})
    show_precision = len({r["precision"] for r in test}) > 1
    tables, cells = {}, []
    for variant in (AS_PUBLISHED, CORRECTED) if study.decisions else (AS_PUBLISHED,):  # no decisions: one table
        configs: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
        for r in test:
            if r["metric"] in (metric, second) and in_variant(parse_decisions(r["decisions"]), variant):
                key = (r["method"], r["protocol"], r["fraction"] or 1.0, r["profile"], r["dataset"], r["dataset_used"])
                configs[key][r["config_id"]].append(r)
        if not configs:
            continue
        groups: dict[tuple, list[dict]] = {}  # (method, protocol, fraction, profile, tag, ds, used) -> runs
        for (method, protocol, fraction, profile, ds, used), by_config in configs.items():
            for config_id, tag in config_tags(by_config, show_precision).items():
                groups[(method, protocol, fraction, profile, tag, ds, used)] = by_config[config_id]
        keys = sorted({k[:5] for k in groups}, key=lambda k: (*_order(study, k[0], k[1]), k[2], k[3], k[4]))
        headers = ["method", "protocol", "labels", "profile"]
        for ds, used in datasets:
            name = f"{ds} ({used})" if ds != used else ds
            headers += [f"{name} {metric}", second, "reported", "Δ"]
        table, notes = [], EnvironmentNotes()
        for method, protocol, fraction, profile, tag in keys:
            title = tagged(methods.get(method, method), tag)
            line = [title, protocols.get(protocol, protocol), format_fraction(fraction), profile]
            for ds, used in datasets:
                runs = groups.get((method, protocol, fraction, profile, tag, ds, used), [])
                main = [r for r in runs if r["metric"] == metric]
                auc = [r["value"] for r in runs if r["metric"] == second and not np.isnan(r["value"])]
                mean = None
                if main:
                    mean, std, n = mean_std([r["value"] for r in main])
                    ids = sorted(r["run_id"] for r in main)
                    where = f"{ds if ds == used else f'{ds} ({used})'}, {title}, {line[1]}, {line[2]}"
                    line.append(format_mean_std(mean, std, n) + (" †" if collapsed & set(ids) else "")
                                + notes.mark(where, main))
                    cells.append([variant, ds, used, method, protocol, fraction, profile, main[0]["config_id"], tag,
                                  metric, mean, std, n, " ".join(ids), mixed_environments(main)])
                else:
                    line.append("-")
                line.append(format_mean_std(*mean_std(auc)) if auc else "-")
                rep = reported.get((ds, method, protocol, metric, fraction))
                rep_value = rep.value if rep is not None and rep.value is not None else None
                hard = " (hard-coded)" if rep is not None and not rep.backed_by_runs else ""
                line.append(f"{rep_value * 100:.2f}{hard}" if rep_value is not None else "-")
                line.append(f"{(mean - rep_value) * 100:+.2f}" if rep_value is not None and mean is not None else "-")
            table.append(line)
        tables[variant] = (headers, table, notes.note())
    return tables, cells


# what the tags in brackets say (paper_output.config_tags)
ROW_TAGS = ("A tag in brackets tells runs apart from those of another config id met in the same place: "
            "'tuned' (`medssl tune`'s best values, `replicate --overrides`), the precision (where both meet), "
            "'config <id>' otherwise; ‡ marks runs shown although stale, with why: kept (`replicate "
            "--reuse-stale`) or shown with `paper --include-stale`.")
CELL_COLUMNS = ("variant", "dataset", "dataset_used", "method", "protocol", "fraction", "profile", "config_id",
                "setting", "metric", "mean", "std", "n", "run_ids", "environments")


# cell -> decision-free settings (``decision_free``) -> side -> config id -> runs: what decision_table and
# variant_match pair
Pairings = dict[tuple, dict[str, dict[str, dict[str, list[dict]]]]]


def _pairings() -> Pairings:
    return defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))


def _paired(pairings: dict[str, dict[str, dict[str, list[dict]]]], side: str,
            show_precision: bool) -> Iterator[tuple[str, list[dict], dict[str, dict[str, list[dict]]]]]:
    """For each config id on ``side`` of one cell, main one first: its tag (``config_tags``), its runs and the sides
    of the settings it shares with them but for the decisions, whose config ids it is compared with."""
    owner = {config: groups for groups in pairings.values() for config in groups.get(side, {})}
    sides = {config: groups[side][config] for config, groups in owner.items()}
    for config, tag in config_tags(sides, show_precision).items():
        yield tag, sides[config], owner[config]


def decision_table(study: Study, rows: list[dict], metric: str,
                   notes: EnvironmentNotes | None = None) -> tuple[list, list[list]]:
    """Effect of correcting each decision alone (and all together) vs the as-published runs of the same
    profile, dataset, method, protocol and label fraction, where both sides exist: each side the runs of one config
    id, paired with the one whose settings differ only in the decisions (``decision_free``; so bf16 runs meet
    bf16 runs, tuned values tuned ones). ``notes``: where the numbers that meet mix environments."""
    methods, protocols, _ = _titles(study)
    notes = notes if notes is not None else EnvironmentNotes()
    test = [r for r in rows if r["split"] == "test" and r["metric"] == metric and not r["kept_stale"]]
    show_precision = len({r["precision"] for r in test}) > 1
    by_cell = _pairings()  # sides: 'baseline', a decision corrected alone, 'all'
    for r in test:
        d = parse_decisions(r["decisions"])
        if not d:
            continue
        flipped = sorted(k for k, v in d.items() if v == CORRECTED)
        if not flipped:
            keys = ["baseline"]
        elif len(flipped) == len(d):
            keys = ["all", *flipped] if len(d) == 1 else ["all"]  # one applicable decision: both rows
        elif len(flipped) == 1:
            keys = flipped
        else:
            continue
        cell = (r["profile"], r["dataset_used"], r["method"], r["protocol"], r["fraction"] or 1.0)
        for key in keys:
            by_cell[cell][r["decision_free"]][key][r["config_id"]].append(r)
    descriptions = {d.name: d for d in study.decisions}
    table = []
    for (profile, used, method, protocol, fraction), pairings in sorted(by_cell.items()):
        for tag, base_runs, groups in _paired(pairings, "baseline", show_precision):
            base, base_std, base_n = mean_std([r["value"] for r in base_runs])
            title = tagged(methods.get(method, method), tag)
            for key in [d.name for d in study.decisions] + ["all"]:
                for runs in groups.get(key, {}).values():
                    mean, std, n = mean_std([r["value"] for r in runs])
                    if key == "all":
                        what, change = "all decisions corrected", "-"
                    else:
                        d = descriptions[key]
                        what, change = d.description, f"{_side(d, AS_PUBLISHED)} → {_side(d, CORRECTED)}"
                    where = f"{used}, {title}, {protocols.get(protocol, protocol)}, {format_fraction(fraction)}"
                    mark = notes.mark(f"{where}: {what}", base_runs + runs)
                    table.append([profile, used, title, protocols.get(protocol, protocol), format_fraction(fraction),
                                  what, change, format_mean_std(base, base_std, base_n),
                                  format_mean_std(mean, std, n) + mark,
                                  f"{(mean - base) * 100:+.2f}"])
    headers = ["profile", "dataset", "method", "protocol", "labels", "decision", "as published → corrected",
               f"{metric} as published", f"{metric} corrected", "Δ (pp)"]
    return headers, table


def _setting(value) -> str:
    """A decision's value as a reader wants it: several params' values joined, AS_DECLARED as words."""
    if isinstance(value, tuple):
        return ", ".join(_setting(v) for v in value)
    return "the code's own" if value == AS_DECLARED else f"{value:.4g}" if isinstance(value, float) else str(value)


def _side(decision: Decision, choice: str) -> str:
    """One side of a decision: its value, and its label where it declares labels."""
    value = _setting(decision.value(choice))
    return f"{value} ({decision.label(choice)})" if decision.labels else value


# a reported number matches a variant when it lies within 2 sample stds of the variant's mean over seeds, never
# closer than this floor (a fraction, as the metrics): two or three seeds that happen to agree give a spread that
# hardware and library noise alone exceed (the last-epoch AUC moved 2 points between GPU and CPU)
MATCH_TOLERANCE = 0.005


def within_spread(mean: float, std: float | None, reported: float, tolerance: float = MATCH_TOLERANCE) -> bool:
    return abs(mean - reported) <= max(2 * (std or 0.0), tolerance)


def variant_match(study: Study, rows: list[dict],
                  notes: EnvironmentNotes | None = None) -> tuple[list, list[list], dict[str, tuple[int, int]]]:
    """Which variant the source's numbers match: for each cell with a reported number where both the as-published
    and the corrected variant ran (each side the runs of one config id, paired as ``decision_table`` pairs them),
    each side's mean ± std, Δ = mean − reported, and the variants whose seeds' spread holds the reported number
    (``within_spread``). Also, per variant, (cells it matches, cells compared)."""
    methods, protocols, _ = _titles(study)
    notes = notes if notes is not None else EnvironmentNotes()
    reported = reported_by_cell(study)
    test = [r for r in rows if r["split"] == "test" and not r["kept_stale"] and not np.isnan(r["value"])]
    show_precision = len({r["precision"] for r in test}) > 1
    by_cell = _pairings()  # sides: the variants
    for r in test:
        d = parse_decisions(r["decisions"])
        fraction = r["fraction"] or 1.0
        rep = reported.get((r["dataset"], r["method"], r["protocol"], r["metric"], fraction))
        if not d or rep is None or rep.value is None:
            continue
        for variant in (AS_PUBLISHED, CORRECTED):
            if in_variant(d, variant):
                cell = (r["profile"], r["dataset"], r["dataset_used"], r["method"], r["protocol"], fraction,
                        r["metric"])
                by_cell[cell][r["decision_free"]][variant][r["config_id"]].append(r)
    titles = {v: variant_title(v, study.decisions) for v in (AS_PUBLISHED, CORRECTED)}
    counts = dict.fromkeys(titles, (0, 0))
    table = []
    for cell, pairings in sorted(by_cell.items(), key=lambda kv: (kv[0][:3], *_order(study, *kv[0][3:5]),
                                                                 *kv[0][5:])):
        profile, ds, used, method, protocol, fraction, metric = cell
        value = reported[(ds, method, protocol, metric, fraction)].value
        for tag, published, groups in _paired(pairings, AS_PUBLISHED, show_precision):
            for other in groups.get(CORRECTED, {}).values():
                title = tagged(methods.get(method, method), tag)
                where = f"{ds if ds == used else f'{ds} ({used})'}, {title}, {format_fraction(fraction)}, {metric}"
                line, matched = [profile, ds if ds == used else f"{ds} ({used})", title,
                                 protocols.get(protocol, protocol), format_fraction(fraction), metric,
                                 f"{value * 100:.2f}"], []
                for variant, runs in ((AS_PUBLISHED, published), (CORRECTED, other)):
                    mean, std, n = mean_std([r["value"] for r in runs])
                    line.append(f"{format_mean_std(mean, std, n)}{notes.mark(f'{where}, {titles[variant]}', runs)}, "
                                f"Δ {(mean - value) * 100:+.2f}")
                    within = within_spread(mean, std, value)
                    matched += [titles[variant]] if within else []
                    counts[variant] = (counts[variant][0] + within, counts[variant][1] + 1)
                line.append("both" if len(matched) == 2 else matched[0] if matched else "neither")
                table.append(line)
    headers = ["profile", "dataset", "method", "protocol", "labels", "metric", "reported", titles[AS_PUBLISHED],
               titles[CORRECTED], "within the seeds' spread"]
    return headers, table, counts


def claim_verdicts(study: Study, rows: list[dict], metric: str,
                   notes: EnvironmentNotes | None = None) -> tuple[list, list[list]]:
    """Per comparison, dataset, label fraction, variant and precision where both sides ran: each config id of a
    method against each config id of the baseline on the test metric, Welch's t-test over their seeds. 'supported'
    / 'contradicted' need p < 0.05 (and two seeds a side); anything else is 'inconclusive'. ``notes``: where the
    numbers that meet mix environments."""
    from scipy import stats

    methods, protocols, _ = _titles(study)
    notes = notes if notes is not None else EnvironmentNotes()
    test = [r for r in rows if r["split"] == "test" and r["metric"] == metric and not r["kept_stale"]
            and not np.isnan(r["value"])]
    show_precision = len({r["precision"] for r in test}) > 1
    table = []
    for comparison in study.comparisons:
        # (dataset read, fraction, variant, precision) -> method -> config id -> runs
        cells: dict[tuple, dict[str, dict[str, list[dict]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(
            list)))
        for r in test:
            if r["protocol"] == comparison.protocol:
                variant = variant_label(parse_decisions(r["decisions"]), study.decisions)
                cells[(r["dataset_used"], r["fraction"] or 1.0, variant, r["precision"])][r["method"]][
                    r["config_id"]].append(r)
        for (used, fraction, variant, _), by_method in sorted(cells.items()):
            bases = by_method.get(comparison.baseline)
            if not bases:
                continue
            base_tags = config_tags(bases, show_precision)
            for method in comparison.methods:
                configs = by_method.get(method, {})
                tags = config_tags(configs, show_precision) if configs else {}
                for (config, tag), (base_config, base_tag) in product(tags.items(), base_tags.items()):
                    runs, base_runs = configs[config], bases[base_config]
                    values, base = [r["value"] for r in runs], [r["value"] for r in base_runs]
                    delta = np.mean(values) - np.mean(base)
                    p = float("nan")
                    if len(values) > 1 and len(base) > 1:
                        p = float(stats.ttest_ind(values, base, equal_var=False).pvalue)
                    verdict = "inconclusive"
                    if p < 0.05:
                        verdict = "supported" if delta > 0 else "contradicted"
                    title = tagged(methods.get(method, method), tag)
                    mark = notes.mark(f"{used}, {format_fraction(fraction)}, {variant}: {title} vs "
                                      f"{tagged(methods.get(comparison.baseline, comparison.baseline), base_tag)}",
                                      runs + base_runs)
                    table.append([comparison.claim, used, protocols.get(comparison.protocol, comparison.protocol),
                                  format_fraction(fraction), variant, title, format_mean_std(*mean_std(values)) + mark,
                                  tagged(format_mean_std(*mean_std(base)), base_tag), f"{delta * 100:+.2f}",
                                  "-" if np.isnan(p) else f"{p:.3g}", verdict])
    headers = ["claim", "dataset", "protocol", "labels", "variant", "method", f"{metric} method",
               f"{metric} baseline", "Δ (pp)", "Welch p", "verdict"]
    return headers, table


def _most_seeds(configs: dict[str, SizedT]) -> SizedT:
    """The runs of the config id with most runs (then the lowest id): what a figure draws where several meet,
    ranked as the main table ranks them."""
    return min(configs.items(), key=lambda kv: (-len(kv[1]), kv[0]))[1]


def accuracy_bars(rows: list[dict], metric: str) -> tuple[dict[tuple[str, str], dict[tuple[str, str], list[float]]],
                                                          bool]:
    """(variant, dataset read) -> (protocol, method) -> the values (%) of one bar at all the labels: the runs of one
    config id, the one with most seeds (a bar never pools settings; tuned and stale runs are in the tables only);
    and whether some bar had runs of other config ids too."""
    by_config: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["split"] == "test" and r["metric"] == metric and (r["fraction"] or 1.0) == 1.0 \
                and not r["kept_stale"] and not r["tuned"]:
            for variant in (AS_PUBLISHED, CORRECTED):
                if in_variant(parse_decisions(r["decisions"]), variant):
                    key = (variant, r["dataset_used"], r["protocol"], r["method"])
                    by_config[key][r["config_id"]].append(r["value"] * 100)
    bars: dict[tuple[str, str], dict[tuple[str, str], list[float]]] = defaultdict(dict)
    for (variant, used, protocol, method), configs in by_config.items():
        bars[(variant, used)][(protocol, method)] = _most_seeds(configs)
    return bars, any(len(configs) > 1 for configs in by_config.values())


def accuracy_figure(study: Study, rows: list[dict], metric: str, out: Path) -> list[Path]:
    methods, protocols, _ = _titles(study)
    bars, several = accuracy_bars(rows, metric)
    if not bars:
        return []
    variants = [v for v in (AS_PUBLISHED, CORRECTED) if any(k[0] == v for k in bars)]
    datasets = sorted({k[1] for k in bars})
    fig, axes = plt.subplots(len(variants), len(datasets), squeeze=False,
                             figsize=(max(6, 5.5 * len(datasets)), 3.6 * len(variants)))
    drawn = {bar for by_bar in bars.values() for bar in by_bar}
    proto_names = [p.name for p in study.protocols if any(bar[0] == p.name for bar in drawn)]
    method_names = [m.name for m in study.methods if any(bar[1] == m.name for bar in drawn)]
    width = 0.8 / max(1, len(proto_names))
    colors = plt.get_cmap("tab10").colors
    for i, variant in enumerate(variants):
        for j, ds in enumerate(datasets):
            ax = axes[i][j]
            here = bars.get((variant, ds), {})
            for k, proto in enumerate(proto_names):
                means, stds = [], []
                for m in method_names:
                    vals = here.get((proto, m), [])
                    means.append(np.mean(vals) if vals else np.nan)
                    stds.append(np.std(vals, ddof=1) if len(vals) > 1 else 0.0)
                x = np.arange(len(method_names)) + (k - (len(proto_names) - 1) / 2) * width
                ax.bar(x, means, width, yerr=stds, capsize=2, label=protocols.get(proto, proto), color=colors[k % 10])
            ax.set_xticks(np.arange(len(method_names)), [methods.get(m, m) for m in method_names], rotation=20)
            ax.set_ylabel(f"test {metric} (%)")
            ax.set_title(f"{ds}: {variant_title(variant, study.decisions)}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
            finite = [v for (_, used), by_bar in bars.items() if used == ds for vals in by_bar.values() for v in vals]
            ax.set_ylim(max(0, min(finite) - 10), min(100, max(finite) + 5))
    axes[0][-1].legend(fontsize=8, loc="lower right")
    more = "; where a bar has runs of several configs, the one with most seeds (all in cells.csv)" if several else ""
    fig.suptitle(f"{study.title}: test {metric}, mean ± std over seeds{more}", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, out, "accuracy")


def efficiency_points(rows: list[dict]) -> tuple[dict[float, list[float]], bool]:
    """fraction -> the values (%) of one line's point: the runs of one config id, the one with most seeds (a
    point never pools settings); and whether some fraction had runs of other config ids too."""
    by_config: dict[float, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_config[r["fraction"] or 1.0][r["config_id"]].append(r["value"] * 100)
    points = {f: _most_seeds(c) for f, c in by_config.items()}
    return points, any(len(c) > 1 for c in by_config.values())


def label_efficiency_figure(study: Study, rows: list[dict], metric: str, out: Path) -> list[Path]:
    """Test metric against the label fraction (log axis), one line per method and protocol, the seeds' spread
    as a band; the corrected variant where it ran, else the as-published one. Only with two or more fractions."""
    methods, protocols, _ = _titles(study)
    test = [r for r in rows if r["split"] == "test" and r["metric"] == metric and not r["kept_stale"]
            and not r["tuned"]]  # tuned and stale runs are in the tables only
    if len({r["fraction"] or 1.0 for r in test}) < 2:
        return []
    variant = CORRECTED if study.decisions and any(in_variant(parse_decisions(r["decisions"]), CORRECTED)
                                                   for r in test) else AS_PUBLISHED
    test = [r for r in test if in_variant(parse_decisions(r["decisions"]), variant)]
    datasets = sorted({r["dataset_used"] for r in test})
    lines = sorted({(r["method"], r["protocol"]) for r in test}, key=lambda k: _order(study, *k))
    fig, axes = plt.subplots(1, len(datasets), squeeze=False, figsize=(5.5 * len(datasets), 4.2))
    colors, styles = plt.get_cmap("tab10").colors, ["-", "--", ":", "-."]
    method_names = list(dict.fromkeys(m for m, _ in lines))
    proto_names = list(dict.fromkeys(p for _, p in lines))
    # (study dataset, method, protocol, backed by runs) -> fraction -> reported value (%); the first declared wins
    reported: dict[tuple, dict[float, float]] = defaultdict(dict)
    for rep in study.reported:
        if rep.metric == metric and rep.value is not None:
            reported[(rep.dataset, rep.method, rep.protocol, rep.backed_by_runs)].setdefault(rep.fraction or 1.0,
                                                                                          rep.value * 100)
    left_out = False
    for ax, ds in zip(axes[0], datasets, strict=True):
        for method, proto in lines:
            mine = [r for r in test if (r["dataset_used"], r["method"], r["protocol"]) == (ds, method, proto)]
            if not mine:
                continue
            by_fraction, several = efficiency_points(mine)
            left_out |= several
            keys = {r["dataset"] for r in mine}
            xs = sorted(by_fraction)
            mean = np.array([np.mean(by_fraction[x]) for x in xs])
            std = np.array([np.std(by_fraction[x], ddof=1) if len(by_fraction[x]) > 1 else 0.0 for x in xs])
            color = colors[method_names.index(method) % 10]
            ax.plot(xs, mean, styles[proto_names.index(proto) % 4], color=color, marker="o", ms=3,
                    label=f"{methods.get(method, method)}, {protocols.get(proto, proto)}")
            ax.fill_between(xs, mean - std, mean + std, color=color, alpha=0.15)
            for backed, marker, what in ((True, "x", "reported (the source's runs)"),
                                         (False, "+", "reported, hard-coded (no run behind it)")):
                points = sorted((f, v) for key in keys for f, v in reported.get((key, method, proto, backed),
                                                                                  {}).items())
                if points:
                    ax.plot(*zip(*points, strict=True), marker, color=color, ms=7, label=what)
        ax.set_xscale("log")
        ticks = sorted({r["fraction"] or 1.0 for r in test if r["dataset_used"] == ds})
        ax.set_xticks(ticks, [format_fraction(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("training labels used")
        ax.set_ylabel(f"test {metric} (%)")
        ax.set_title(ds, fontsize=10)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))  # one entry per kind of reported number
    rows = -(-len(unique) // 2)
    fig.legend(unique.values(), unique.keys(), loc="lower center", ncol=2, fontsize=7, frameon=False)
    which = f" ({variant_title(variant, study.decisions)})" if study.decisions else ""
    more = "; where a point has runs of several configs, the one with most seeds (all in cells.csv)" if left_out else ""
    fig.suptitle(f"{study.title}: label efficiency{which}, mean ± std over seeds{more}", fontsize=11)
    fig.tight_layout(rect=(0, min(0.5, 0.045 * rows + 0.02), 1, 1))
    return save_figure(fig, out, "label_efficiency")


def curves_figure(study: Study, db: Path, out: Path, pretrain_ids: list[str]) -> list[Path]:
    methods, _, _ = _titles(study)
    with connect(db, read_only=True, wait_s=30) as con:
        data = con.execute(
            """SELECT r.run_id, r.dataset_used, r.method, r.decisions, c.step,
                      CASE WHEN c.name = 'loss' THEN 'loss' ELSE 'knn' END, c.value, r.config_id FROM runs r
               JOIN curves c USING (run_id) WHERE r.study = ? AND r.kind = 'pretrain' AND r.status = 'ok'
               AND r.run_id IN (SELECT unnest(?)) AND c.name IN ('loss', 'knn_val_accuracy', 'knn_val_auc')
               ORDER BY c.step""",
            [study.name, pretrain_ids]).fetchall()
    if not data:
        return []
    # (dataset, method, variant) -> config id -> its runs: a curve is drawn from one config id's runs
    configs: dict[tuple, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for rid, used, meth, dec, *_, config in data:
        for variant in (AS_PUBLISHED, CORRECTED):
            if in_variant(parse_decisions(dec), variant):
                configs[(used, meth, variant)][config].add(rid)
    drawn = {key: _most_seeds(by_config) for key, by_config in configs.items()}
    datasets = sorted({d[1] for d in data})
    method_names = [m.name for m in study.methods if any(d[2] == m.name for d in data)]
    monitored = {d[1] for d in data if d[5] == "knn"}
    # one loss panel per method (own scale), then the kNN monitor where there is one; at most 5 panels a row
    ncols = min(5, len(method_names) + 1)
    rows_of = {ds: math.ceil((len(method_names) + (ds in monitored)) / ncols) for ds in datasets}
    fig, axes = plt.subplots(sum(rows_of.values()), ncols, squeeze=False,
                             figsize=(3.2 * ncols, 2.9 * sum(rows_of.values())))
    colors = plt.get_cmap("tab10").colors

    def series_of(ds, method, name, variant):
        series = defaultdict(list)
        for rid, used, meth, _, step, n, v, _ in data:
            if used == ds and meth == method and n == name and rid in drawn.get((ds, method, variant), ()):
                series[step].append(v)
        steps = sorted(series)
        return steps, np.array([np.mean(series[t]) for t in steps]), np.array([np.std(series[t]) for t in steps])

    first_row = 0
    for ds in datasets:
        panels = [ax for row in axes[first_row:first_row + rows_of[ds]] for ax in row]
        first_row += rows_of[ds]
        knn_ax = panels[len(method_names)] if ds in monitored else None
        for ax in panels[len(method_names) + (ds in monitored):]:
            ax.axis("off")
        for k, m in enumerate(method_names):
            ax = panels[k]
            title = methods.get(m, m)
            for variant, style in ((AS_PUBLISHED, "-"), (CORRECTED, "--")):
                label = title + (" (corrected)" if variant == CORRECTED else "")
                for name, target in (("loss", ax), ("knn", knn_ax)):
                    steps, mean, std = series_of(ds, m, name, variant)
                    if steps and target is not None:
                        target.plot(steps, mean, style, color=colors[k % 10], label=label, marker="o", ms=3)
                        target.fill_between(steps, mean - std, mean + std, color=colors[k % 10], alpha=0.15)
            ax.set_title(f"{ds}: {title if len(title) <= 24 else m}", fontsize=9)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs: no 1.5 on a 3-epoch axis
            ax.grid(alpha=0.3)
            if k % ncols == 0:
                ax.set_ylabel("SSL loss", fontsize=8)
        if knn_ax is not None:
            knn_ax.set_title(f"{ds}: kNN on val (accuracy;\nmean AUC if multi-label)", fontsize=9)
            knn_ax.set_xlabel("epoch")
            knn_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            knn_ax.grid(alpha=0.3)
            knn_ax.legend(fontsize=6)
    more = ("; where a curve has runs of several configs, the one with most seeds"
            if any(len(by_config) > 1 for by_config in configs.values()) else "")
    fig.suptitle(f"{study.name}: pretraining curves, mean ± std over seeds (solid: as published, dashed: "
                 f"corrected){more}", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, out, "pretraining_curves")


def tsne_figure(study: Study, db: Path, out: Path, eval_ids: list[str], *, max_points: int = 1500) -> list[Path]:
    """t-SNE (the study's plot.py) of the frozen test features that an evaluation of each method recorded
    (artifact TEST_FEATURES, up to 2,000 points; kNN and frozen probes save them): the run ``figure_runs`` picks, as
    published where such a run saved them, else corrected. Read from the store, no model is run here."""
    from sklearn.manifold import TSNE

    methods, _, _ = _titles(study)
    picked = figure_runs(study, db, TEST_FEATURES, eval_ids)
    chosen: dict[tuple[str, str], tuple[str, str, str, str]] = {}  # (cell, method) -> run, path, variant, dataset
    for variant in (AS_PUBLISHED, CORRECTED):
        for (cell, v), entries in picked.items():
            for method, _protocol, _fraction, dataset, rid, path in entries:
                if v == variant:
                    chosen.setdefault((cell, method), (rid, path, variant, dataset))
    if not chosen:
        return []
    order = [m.name for m in study.methods]
    datasets = sorted({k[0] for k in chosen})
    ncols = max(sum(1 for k in chosen if k[0] == ds) for ds in datasets)
    fig, axes = plt.subplots(len(datasets), ncols, squeeze=False, figsize=(3.6 * ncols, 3.4 * len(datasets)))
    for ax in axes.flat:
        ax.axis("off")
    for i, ds in enumerate(datasets):
        keys = sorted((k for k in chosen if k[0] == ds), key=lambda k: order.index(k[1]) if k[1] in order else 99)
        for j, key in enumerate(keys):
            rid, path, variant, dataset = chosen[key]
            names = class_names(study, dataset, ds)
            with np.load(path) as saved:
                f, y = saved["features"].astype(np.float32)[:max_points], saved["labels"][:max_points]
            emb = TSNE(2, random_state=42, init="pca", perplexity=min(30, max(5, len(f) // 10))).fit_transform(f)
            colour = y if y.ndim == 1 else y.argmax(axis=1)  # multi-label: the first positive label
            ax = axes[i][j]
            ax.axis("on")
            for c in np.unique(colour):
                ax.scatter(emb[colour == c, 0], emb[colour == c, 1], s=4, alpha=0.7,
                           label=names[c] if c < len(names) else str(c))
            ax.set_xticks([])
            ax.set_yticks([])
            which = f", {variant_label({'v': variant})}" if study.decisions else ""
            ax.set_title(f"{ds}: {methods.get(key[1], key[1])}{which}\nrun {rid}", fontsize=9)
        axes[i][0].legend(title="class", fontsize=7, markerscale=3)
    fig.suptitle(f"{study.title}: t-SNE of frozen test features (lowest seed)", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, out, "tsne")


def generate(study: Study, db: Path, out: Path, *, data_dir=None, profile: str | None = None,
             tsne: bool = True, include_stale: bool = False) -> list[Path]:
    """Tables and figures of the study's runs as declared now (and of `medssl tune`'s best values, as their own
    rows), one folder per profile under ``out``. ``include_stale``: stale runs are shown, marked with why (the
    definitions or data that changed), instead of left out."""
    with connect(db, read_only=True, wait_s=30) as con:
        recorded = con.execute("SELECT run_id, status, spec_json FROM runs WHERE study = ? ORDER BY finished_at",
                               [study.name]).fetchall()
        reused = {r for (r,) in con.execute("SELECT run_id FROM reused WHERE study = ?", [study.name]).fetchall()}
        try:
            trials = con.execute("SELECT optuna_study, trial, run_id, params, value FROM trials WHERE "
                                 "split_part(optuna_study, '/', 1) = ? AND value IS NOT NULL", [study.name]).fetchall()
        except duckdb.CatalogException:  # a database from before `medssl tune`: no trials
            trials = []
    if profile is not None:
        study.profile(profile)  # validates the name
    if not any(status == "ok" for _, status, _ in recorded):
        raise StoreError(f"{db} holds no finished runs of {study.name}: run `medssl replicate {study.name}` first "
                         "(or pass --db with the database that holds them).")
    chosen = select(study, recorded, reused, profile=profile, data_dir=data_dir, trials=trials,
                    include_stale=include_stale)
    specs = {rid: RunSpec.from_json(s) for rid, _, s in recorded if rid in chosen.accepted}
    profiles = sorted({spec.profile for spec in specs.values()})
    if not profiles:
        stale = any(why.startswith(STALE) for _, _, why in chosen.left_out)
        raise StoreError(f"None of the {len(recorded)} runs of {study.name} in {db} can be used"
                         + (f" for profile {profile!r}" if profile else "") + ": "
                         + summarise([[why] for _, _, why in chosen.left_out])
                         + f". Run `medssl replicate {study.name}` to (re)run them"
                         + (", or `medssl paper --include-stale` to show the stale ones, marked" if stale else "")
                         + ".")
    written: list[Path] = []
    for name in profiles:
        accepted = {rid: note for rid, note in chosen.accepted.items() if specs[rid].profile == name}
        written += _generate_profile(study, db, out / name, name, accepted, set(chosen.tuned) & set(accepted),
                                     {rid: spec.kind for rid, spec in specs.items()}, tsne=tsne)
        written += mask_figures([specs[rid] for rid in accepted], out / name, data_dir)
    left_out = out / "left_out.csv"
    out.mkdir(parents=True, exist_ok=True)
    with open(left_out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run_id", "run", "why"])
        w.writerows(chosen.left_out)
    shown_stale = [note for note in chosen.accepted.values() if note]
    readme = out / "README.md"
    readme.write_text(
        f"# {study.title}\n\n{study.citation}\n\nGenerated by `medssl paper {study.name}` from {db}: the runs of "
        "the study as declared now, under the current code and data. Every table cell is the mean of the runs "
        "of one config id (same settings, code and data; only the seed differs).\n\n"
        + "".join(f"- [{name}/]({name}/README.md): profile {name}\n" for name in profiles)
        + f"\n## Left out ({len(chosen.left_out)} runs; each listed in [left_out.csv](left_out.csv))\n\n"
        + _counted([why for _, _, why in chosen.left_out])
        + (f"\n## Shown although stale ({len(shown_stale)} runs, ‡ in the tables)\n\n" + _counted(shown_stale)
           if shown_stale else "")
        + (f"\n## Tuned ({len(chosen.tuned)} runs of `medssl tune`'s best values, rows marked 'tuned')\n\n"
           + _counted(list(chosen.tuned.values())) if chosen.tuned else ""))
    return [*written, left_out, readme]


def _counted(whys: list[str]) -> str:
    """A Markdown list of the reasons given, each with its number of runs."""
    return "".join(f"- {why}: {n} runs\n" for why, n in Counter(whys).most_common()) or "nothing\n"


def mask_figures(specs: list[RunSpec], out: Path, data_dir) -> list[Path]:
    """The rule-based lung masks of each dataset the runs read with masks, at the side they were computed at
    (masks_show); nothing where the data is not at hand (the tables never need it)."""
    from medssl_core.paper.masks_show import show

    read = sorted({(s.dataset_used, s.hparams.get("source_size") or s.hparams["image_size"]) for s in specs
                   if s.hparams.get("masks", "none") == "lung_rule" or s.hparams.get("crop_to_lungs")})
    written = []
    for dataset, size in read:
        try:
            written.append(show(dataset, out, data_dir=data_dir, size=size, allow_download=False))
        except MedsslError:
            continue  # the data is elsewhere: `medssl masks show` draws them where it is
    return written


def _cell_with_reported(reported: dict[tuple, Reported], cell: list) -> dict:
    """A cells.csv row as a dict, with the source's number the table shows for it (``reported_by_cell``)."""
    out = dict(zip(CELL_COLUMNS, cell, strict=True))
    rep = reported.get((out["dataset"], out["method"], out["protocol"], out["metric"], out["fraction"]))
    out["reported"] = None if rep is None else rep.value
    out["reported_hard_coded"] = rep is not None and rep.value is not None and not rep.backed_by_runs
    return out


def _generate_profile(study: Study, db: Path, out: Path, profile: str, accepted: dict[str, str], tuned: set[str],
                      kinds: dict[str, str], *, tsne: bool) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    rows = load_rows(study, db, accepted, tuned)
    metric = study.main_metric
    written: list[Path] = []
    structured: dict[str, dict] = {}  # every table as data, for the cross-study report (summary.json)

    def write_table(out: Path, stem: str, title: str, headers: list, table: list, note: str) -> list[Path]:
        structured[stem] = {"title": title, "headers": headers, "rows": table}
        return paper_output.write_table(out, stem, title, headers, table, note)

    tables, cells = main_tables(study, rows, metric)
    claims = "\n".join(f"- {c}" for c in study.claims)
    for variant, (headers, table, environments) in tables.items():
        note = (f"Profile {profile}. Test {metric} (%) and {secondary_metric(metric)} as mean ± sample std over "
                f"seeds (n = seeds); one config id per cell. Variant: {variant_title(variant, study.decisions)}. "
                "'reported' is the source's number where "
                f"one is known ({study.citation}); Δ = reproduced − reported. Columns name the study's dataset "
                "and, in brackets, the stand-in actually used. The run ids behind every cell are in cells.csv. † "
                "marks a cell where at least one run predicts a single class on test (collapse: its accuracy is "
                f"the majority-class rate). {ROW_TAGS}" + environments)
        written += write_table(out, f"main_{variant}", f"{study.title}: main results", headers, table, note)
    notes = EnvironmentNotes()
    headers, table = decision_table(study, rows, metric, notes)
    if table:
        written += write_table(out, "decisions", f"{study.title}: effect of each decision", headers, table,
                                f"Profile {profile}. Each row compares runs that differ only in the named "
                                "decision(s) with the as-published runs of the same dataset, method, protocol and "
                                f"label fraction (test {metric}, %), each side one config id. Δ in percentage points. "
                                f"{ROW_TAGS}" + notes.note())
    notes = EnvironmentNotes()
    headers, table, matches = variant_match(study, rows, notes)
    if table:
        written += write_table(out, "variant_match", f"{study.title}: which variant matches the reported numbers",
                               headers, table, f"Profile {profile}. For each reported number ({study.citation}) "
                               "where both variants ran: each variant's test value (%), mean ± sample std over the "
                               "seeds of one config id, Δ = mean − reported; the last column names the variants "
                               "whose seeds' spread holds the reported number: |mean − reported| ≤ max(2 × std, "
                               f"{MATCH_TOLERANCE * 100:g} pp). {ROW_TAGS}" + notes.note())
    matched = "; ".join(f"{variant_title(v, study.decisions)}: {k} of {n}" for v, (k, n) in matches.items() if n)
    notes = EnvironmentNotes()
    headers, table = recall_table(study, rows, notes)
    if table:
        written += write_table(out, "per_class_recall", f"{study.title}: per-class recall against the source's",
                               headers, table, f"Profile {profile}. Test recall per class (%), mean ± sample std "
                               "over the seeds of one config id, from the runs' confusion matrices. " + ROW_TAGS
                               + notes.note())
    shared = "; ".join(f"{k}: {', '.join(v)}" for k, v in study.shared_labels.items())
    for used, (headers, table, environments) in per_label_tables(study, rows, reported_per_label(study)).items():
        written += write_table(out, f"per_label_auc_{slug(used)}", f"{study.title}: test AUC per label on {used}",
                               headers, table, f"Profile {profile}. Test ROC-AUC (%) of each label, mean ± sample "
                               "std over the seeds of one config id; '-': no run had both classes of the label among "
                               "its scored images. 'mean AUC' is the runs' mean over the labels they could score."
                               + (f" Shared labels, the findings every dataset labels ({shared}): their mean "
                                  "compares across label spaces." if shared else "") + f" {ROW_TAGS}" + environments)
    notes = EnvironmentNotes()
    headers, table = claim_verdicts(study, rows, metric, notes)
    if table:
        written += write_table(out, "claims", f"{study.title}: the source's claims against the runs", headers, table,
                                f"Profile {profile}. Test {metric} (%), mean ± sample std over the seeds of one "
                                "config id a side, the same precision on both; Welch's t-test over the seeds; a "
                                f"verdict other than 'inconclusive' needs p < 0.05. {ROW_TAGS}" + notes.note())
    with open(out / "cells.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CELL_COLUMNS)
        w.writerows(cells)
    written.append(out / "cells.csv")
    written += accuracy_figure(study, rows, metric, out)
    written += label_efficiency_figure(study, rows, metric, out)
    written += confusion_figures(study, rows, out)
    # the curves, as the accuracy figure, draw the declared settings under the current code
    pretrain_ids = sorted(rid for rid, note in accepted.items() if kinds[rid] == "pretrain" and not note
                          and rid not in tuned)
    written += curves_figure(study, db, out, pretrain_ids)
    eval_ids = sorted(rid for rid in accepted if kinds[rid] == "evaluate")
    for figures in (roc_figures, gradcam_figures, embedding_figures):
        written += figures(study, db, out, eval_ids)
    if tsne:
        written += tsne_figure(study, db, out, eval_ids)
    reported = reported_by_cell(study)
    summary = {"study": study.name, "profile": profile, "database": str(db), "claims": list(study.claims),
               "runs": len(accepted), "kept_stale": sorted(r for r, note in accepted.items() if note),
               "tuned": sorted(tuned),
               "metric": metric, "tables": structured, "cells": [_cell_with_reported(reported, c) for c in cells],
               "figures": sorted(p.name for p in written if p.suffix == ".png")}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "README.md").write_text(
        f"# {study.title}: profile {profile}\n\n{study.citation}\n\n"
        + (f"Claims of the source:\n{claims}\n\n" if claims else "")
        + (f"Reported numbers within the seeds' spread of each variant ([variant_match.md](variant_match.md)): "
           f"{matched}.\n\n" if matched else "")
        + "\n".join(f"- [{p.name}]({p.name})" for p in written) + "\n")
    return [*written, out / "summary.json", out / "README.md"]

