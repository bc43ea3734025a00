"""A study's tables: the main table per variant (mean ± std over exactly the runs of one config), the effect of each
decision, which variant's spread holds each reported number, and the verdict on each claim the study tests."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from itertools import product

import matplotlib

matplotlib.use("Agg")
import numpy as np

from medssl_core.paper.labels import (
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
    tagged,
)
from medssl_core.paper.rows import _order, _titles, reported_by_cell
from medssl_core.plan.study import AS_DECLARED, AS_PUBLISHED, CORRECTED, Decision, Study


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
                auc = [r for r in runs if r["metric"] == second and not np.isnan(r["value"])]
                mean = None
                if main:
                    mean, std, n = mean_std([r["value"] for r in main])
                    where = f"{ds if ds == used else f'{ds} ({used})'}, {title}, {line[1]}, {line[2]}"
                    line.append(format_mean_std(mean, std, n) + (" †" if collapsed & {r["run_id"] for r in main}
                                                                 else "") + notes.mark(where, main))
                else:
                    line.append("-")
                line.append(format_mean_std(*mean_std([r["value"] for r in auc])) if auc else "-")
                for name, of in ((metric, main), (second, auc)):  # both metrics' cells, for the report's headline
                    if of:
                        ids = sorted(r["run_id"] for r in of)
                        cells.append([variant, ds, used, method, protocol, fraction, profile, of[0]["config_id"],
                                      tag, name, *mean_std([r["value"] for r in of]), " ".join(ids),
                                      mixed_environments(of), bool(collapsed & set(ids))])
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


# a cell of the main metric or of its secondary one; 'collapsed': a run of it predicts one class on test (†)
CELL_COLUMNS = ("variant", "dataset", "dataset_used", "method", "protocol", "fraction", "profile", "config_id",
                "setting", "metric", "mean", "std", "n", "run_ids", "environments", "collapsed")


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
    """Effect of correcting each decision alone (and all together, where more than one applies: each set of runs
    once) vs the as-published runs of the same profile, dataset, method, protocol and label fraction, where both
    sides exist: each side the runs of one config id, paired with the one whose settings differ only in the
    decisions (``decision_free``; so bf16 runs meet bf16 runs, tuned values tuned ones). ``notes``: where the numbers
    that meet mix environments."""
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
        elif len(flipped) == 1:  # one corrected (the only one that applies: also 'all', shown once, named)
            keys = flipped
        elif len(flipped) == len(d):
            keys = ["all"]
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
