"""Per-class results from the test confusion matrices the evaluations record (metrics ``confusion_<true>_<pred>``):
row-normalised confusion matrices as figures and per-class recall beside the source's ``recall:<class>`` rows.
Each matrix and each recall is the mean over the seeds of one config id, as every table cell is."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from medssl_core.common.errors import ConfigError
from medssl_core.data.registry import get_dataset
from medssl_core.paper.labels import TRANSFER, drawn_variants, format_fraction, parse_decisions, variant_label
from medssl_core.paper.output import EnvironmentNotes, format_mean_std, mean_std, save_figure, tagged, tags_by_key, wrap
from medssl_core.plan.study import AS_PUBLISHED, CORRECTED, Study

NBSP = "\u00a0"  # keeps '100 %' on one line when a title wraps
_CONFUSION = re.compile(r"confusion_(\d+)_(\d+)$")


def class_names(study: Study, dataset: str, dataset_used: str) -> tuple[str, ...]:
    """The classes results on ``dataset`` name, in label order: the study's (stand-ins are renumbered into it),
    else those of the data read."""
    try:
        declared = study.dataset(dataset).classes
    except ConfigError:
        declared = None
    return declared or get_dataset(dataset_used.split(TRANSFER)[0]).classes


def _cell(r: dict) -> tuple:
    return (r["dataset"], r["dataset_used"], r["method"], r["protocol"], r["fraction"] or 1.0,
            variant_label(parse_decisions(r["decisions"])), r["config_id"])


def run_matrices(rows: list[dict]) -> dict[tuple, list[np.ndarray]]:
    """(dataset, dataset_used, method, protocol, fraction, variant, config_id) -> each run's test confusion
    counts (true x predicted)."""
    cells: dict[tuple, dict[str, dict[tuple[int, int], float]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        m = _CONFUSION.match(r["metric"])
        if r["split"] == "test" and m:
            cells[_cell(r)][r["run_id"]][(int(m[1]), int(m[2]))] = r["value"]
    out = {}
    for key, by_run in cells.items():
        out[key] = []
        for run in by_run.values():
            n = 1 + max(max(t, p) for t, p in run)
            matrix = np.zeros((n, n))
            for (t, p), v in run.items():
                matrix[t, p] = v
            out[key].append(matrix)
    return out


def majority_rates(rows: list[dict]) -> dict[str, float]:
    """dataset read -> the majority class's share (%) of the test images its runs were scored on: a run's confusion
    counts summed over the predictions are its test labels' class counts (no model, no images needed); the mean
    over runs where their test splits differ (a split drawn per script or per seed)."""
    counts: dict[tuple[str, str], dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for r in rows:
        m = _CONFUSION.match(r["metric"])
        if r["split"] == "test" and m:
            counts[(r["dataset_used"], r["run_id"])][int(m[1])] += r["value"]
    rates: dict[str, list[float]] = defaultdict(list)
    for (used, _), by_class in counts.items():
        total = sum(by_class.values())
        if total:
            rates[used].append(100 * max(by_class.values()) / total)
    return {used: float(np.mean(v)) for used, v in rates.items()}


def _row_normalised(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.clip(matrix.sum(axis=1, keepdims=True), 1, None)


def recall_table(study: Study, rows: list[dict], notes: EnvironmentNotes | None = None) -> tuple[list, list[list]]:
    """Per-class test recall (%) of the runs for which the source reports per-class recalls, beside them.
    ``notes``: the rows whose runs mix environments."""
    notes = notes if notes is not None else EnvironmentNotes()
    # per cell: (true class, predicted class) -> the source's rate; a recall is the diagonal cell (true, true)
    reported: dict[tuple, dict[tuple[str, str], float]] = defaultdict(dict)
    for r in study.reported:
        kind, _, what = r.metric.partition(":")
        if kind in ("recall", "confusion") and r.value is not None:
            true, _, predicted = what.partition("->")
            reported[(r.dataset, r.method, r.protocol, r.fraction or 1.0)][(true, predicted or true)] = r.value
    run_rows: dict[tuple, dict[str, dict]] = defaultdict(dict)  # cell -> run id -> one of its rows
    for r in rows:
        if r["split"] == "test" and _CONFUSION.match(r["metric"]):
            run_rows[_cell(r)][r["run_id"]] = r
    tags = tags_by_key({k: list(v.values()) for k, v in run_rows.items()}, len({r["precision"] for r in rows}) > 1)
    table = []
    for key, matrices in sorted(run_matrices(rows).items(), key=lambda kv: str(kv[0])):
        ds, used, method, protocol, fraction, variant, config = key
        quoted = reported.get((ds, method, protocol, fraction))
        if not quoted:
            continue
        variant = tagged(variant, tags[key])
        mark = notes.mark(f"{used}, {method}, {protocol}, {format_fraction(fraction)}, {variant}",
                          run_rows[key].values())
        rates = np.stack([_row_normalised(m) for m in matrices])
        names = class_names(study, ds, used)[:rates.shape[1]]
        off_diagonal = sorted((t, p) for t, p in quoted if t != p and t in names and p in names)
        for true, predicted in [(n, n) for n in names] + off_diagonal:  # every class's recall, then quoted confusions
            values = rates[:, names.index(true), names.index(predicted)]
            rep = quoted.get((true, predicted))
            table.append([ds if ds == used else f"{ds} ({used})", method, protocol, format_fraction(fraction),
                          variant, config[:8], true if true == predicted else f"{true} -> {predicted}",
                          format_mean_std(*mean_std(values)) + mark,
                          f"{rep * 100:.2f}" if rep is not None else "-",
                          f"{(values.mean() - rep) * 100:+.2f}" if rep is not None else "-"])
    headers = ["dataset", "method", "protocol", "labels", "variant", "config", "class (true -> predicted: the share "
               "of a class's test images predicted as another)", "recall or rate", "reported", "Δ"]
    return headers, table


def main_protocol(study: Study, protocols: set[str], methods_of: dict[str, set[str]]) -> str:
    """The protocol a confusion figure shows among ``protocols`` (those with recorded matrices): the one the
    study's claims compare methods under, else the one that evaluated most methods (then the first declared)."""
    claimed = [c.protocol for c in study.comparisons if c.protocol in protocols]
    if claimed:
        return claimed[0]
    order = [p.name for p in study.protocols]
    return min(protocols, key=lambda p: (-len(methods_of[p]), order.index(p) if p in order else len(order), p))


def confusion_figures(study: Study, rows: list[dict], out: Path) -> list[Path]:
    """One grid per dataset: the test confusion matrix of each method under the main protocol (``main_protocol``),
    at the largest label fraction, in the corrected variant where it ran (else as published), the config with most
    seeds; rows normalised to % of the true class, with the counts (mean over seeds) in each cell. Every matrix and
    every other cell is in per_class_recall and cells.csv."""
    matrices = run_matrices(rows)
    written: list[Path] = []
    for ds, used in sorted({k[:2] for k in matrices}):
        mine = [r for r in rows if (r["dataset"], r["dataset_used"]) == (ds, used)]
        variant = {AS_PUBLISHED: "as published", CORRECTED: "corrected"}[drawn_variants(mine)[-1]]
        here = {k: v for k, v in matrices.items() if k[:2] == (ds, used) and k[5] in ("-", variant)}
        if not here:  # only partly corrected runs (one decision at a time): in per_class_recall
            continue
        top = max(k[4] for k in here)
        methods_of: dict[str, set[str]] = defaultdict(set)
        for k in here:
            if k[4] == top:
                methods_of[k[3]].add(k[2])
        protocol = main_protocol(study, set(methods_of), methods_of)
        cells: dict[str, list[np.ndarray]] = {}  # method -> its runs' matrices (the config with most runs)
        for k in sorted(here, key=lambda k: (-len(here[k]), k[6])):
            if k[3] == protocol and k[4] == top:
                cells.setdefault(k[2], here[k])
        order = [m.name for m in study.methods]
        fig = _confusion_grid(study, sorted(cells.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order
                                            else len(order)), class_names(study, ds, used))
        protocol_title = {p.name: p.title for p in study.protocols}.get(protocol, protocol)
        title = ds if ds == used else f"{ds} ({used} standing in)"
        labels = format_fraction(top).replace(" ", NBSP)
        fig.suptitle(wrap(f"{title}: test confusion under {protocol_title}, {variant}, labels {labels}; each row in % "
                          "of its true class, the image count below (mean over seeds)", 90), fontsize=10)
        written += save_figure(fig, out, f"confusion_{ds}")
    return written


def _confusion_grid(study: Study, cells: list[tuple[str, list[np.ndarray]]], names: tuple[str, ...]):
    methods = {m.name: m.title for m in study.methods}
    n_classes = max(len(ms[0]) for _, ms in cells)
    cols = min(4, len(cells))
    side = 1.4 + 0.5 * n_classes
    fig, axes = plt.subplots(-(-len(cells) // cols), cols, squeeze=False, layout="constrained",
                             figsize=(side * cols + 1.2, side * -(-len(cells) // cols) + 1.0))
    labels = [wrap(name, 12) for name in names[:n_classes]]
    image = None
    for ax, (method, runs) in zip(axes.flat, cells, strict=False):
        counts = np.mean(runs, axis=0)
        rates = 100 * np.mean([_row_normalised(m) for m in runs], axis=0)
        image = ax.imshow(rates, vmin=0, vmax=100, cmap="Blues")
        if n_classes <= 12:
            for (t, p), rate in np.ndenumerate(rates):
                count = f"{counts[t, p]:.0f}" if float(counts[t, p]).is_integer() else f"{counts[t, p]:.1f}"
                ax.text(p, t, f"{rate:.0f} %\n({count})", ha="center", va="center", fontsize=7,
                        color="white" if rate > 55 else "black")
        ax.set_xticks(range(n_classes), labels, fontsize=7, rotation=0 if n_classes <= 3 else 45,
                      ha="center" if n_classes <= 3 else "right")
        ax.set_yticks(range(n_classes), labels, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(f"{wrap(methods.get(method, method), 26)}\nn = {len(runs)} seed{'s' * (len(runs) > 1)}",
                     fontsize=8)
    for ax in list(axes.flat)[len(cells):]:
        ax.axis("off")
    fig.colorbar(image, ax=axes, shrink=0.8, label="% of the true class")
    return fig
