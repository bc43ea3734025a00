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
from medssl_core.paper.labels import TRANSFER, format_fraction, parse_decisions, variant_label
from medssl_core.paper.output import EnvironmentNotes, save_figure, tagged, tags_by_key
from medssl_core.plan.study import Study

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
            spread = f" ± {values.std(ddof=1) * 100:.2f}" if len(values) > 1 else ""
            table.append([ds if ds == used else f"{ds} ({used})", method, protocol, format_fraction(fraction),
                          variant, config[:8], true if true == predicted else f"{true} -> {predicted}",
                          f"{values.mean() * 100:.2f}{spread} (n={len(values)}){mark}",
                          f"{rep * 100:.2f}" if rep is not None else "-",
                          f"{(values.mean() - rep) * 100:+.2f}" if rep is not None else "-"])
    headers = ["dataset", "method", "protocol", "labels", "variant", "config", "class (true -> predicted: the share "
               "of a class's test images predicted as another)", "recall or rate", "reported", "Δ"]
    return headers, table


def confusion_figures(study: Study, rows: list[dict], out: Path) -> list[Path]:
    """One figure per dataset: the row-normalised test confusion matrix of each method, protocol and variant at
    the largest label fraction (mean over seeds)."""
    matrices = {k: (np.mean([_row_normalised(m) for m in v], axis=0), len(v)) for k, v in run_matrices(rows).items()}
    written: list[Path] = []
    for ds, used in sorted({k[:2] for k in matrices}):
        here = {k: v for k, v in matrices.items() if k[:2] == (ds, used)}
        top = max(k[4] for k in here)
        panels = sorted((k for k in here if k[4] == top), key=lambda k: (k[5], k[2], k[3], k[6]))
        names = class_names(study, ds, used)
        cols = min(3, len(panels))
        rows_n = -(-len(panels) // cols)
        side = 1.2 + 0.32 * len(names)
        fig, axes = plt.subplots(rows_n, cols, figsize=(side * cols, side * rows_n), squeeze=False)
        for ax, key in zip(axes.flat, panels, strict=False):
            matrix, n = here[key]
            ax.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
            if len(matrix) <= 12:
                for t in range(len(matrix)):
                    for p in range(len(matrix)):
                        ax.text(p, t, f"{matrix[t, p] * 100:.0f}", ha="center", va="center", fontsize=6,
                                color="white" if matrix[t, p] > 0.5 else "black")
            short = [name.split(" (")[0][:14] for name in names[:len(matrix)]]
            ax.set_xticks(range(len(short)), short, rotation=90, fontsize=6)
            ax.set_yticks(range(len(short)), short, fontsize=6)
            ax.set_title(f"{key[2]} / {key[3]}\n{key[5]} (n={n})", fontsize=8)
            ax.set_xlabel("predicted", fontsize=7)
            ax.set_ylabel("true", fontsize=7)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        title = ds if ds == used else f"{ds} ({used} standing in)"
        fig.suptitle(f"{title}: test confusion, row-normalised (%), labels {format_fraction(top)}", fontsize=9)
        fig.tight_layout()
        written += save_figure(fig, out, f"confusion_{ds}")
    return written
