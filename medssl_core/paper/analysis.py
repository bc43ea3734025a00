"""Analyses drawn from what the evaluations stored, never from a model run here: per-label test AUC (a table),
ROC curves per label (artifact TEST_SCORES), Grad-CAM grids (GRADCAM) and 2-D embeddings of the test features
with their silhouettes (EMBEDDING). A figure shows, per dataset and variant (as published, corrected), one run
per method and protocol: the lowest seed at the largest label fraction."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from medssl_core.paper.classes import class_names
from medssl_core.paper.labels import (
    CELL_SOURCE_SQL,
    drawn_variants,
    format_fraction,
    in_variant,
    parse_decisions,
    variant_label,
)
from medssl_core.paper.output import EnvironmentNotes, format_mean_std, mean_std, save_figure, tagged, tags_by_key
from medssl_core.plan.study import Study
from medssl_core.store.records import EMBEDDING, GRADCAM, TEST_SCORES
from medssl_core.store.store import connect

_LABEL_AUC = re.compile(r"auc_label(\d+)$")


def reported_per_label(study: Study) -> dict[str, list[tuple]]:
    """Per study dataset: the source's per-label AUCs, one entry per (method, protocol, fraction, source):
    (method, protocol, fraction, source, backed by runs, {label index: value}, its reported mean or None)."""
    found: dict[tuple, dict[int, float]] = defaultdict(dict)
    means: dict[tuple, float] = {}
    for r in study.reported:
        key = (r.dataset, r.method, r.protocol, r.fraction or 1.0, r.source, r.backed_by_runs)
        m = _LABEL_AUC.match(r.metric)
        if m and r.value is not None:
            found[key][int(m[1])] = r.value
        elif r.metric == "auc" and r.value is not None:
            means.setdefault(key, r.value)
    out: dict[str, list[tuple]] = defaultdict(list)
    for key, values in found.items():
        out[key[0]].append((*key[1:], values, means.get(key)))
    return out


def per_label_tables(study: Study, rows: list[dict], reported: dict[str, list[tuple]] | None = None
                     ) -> dict[str, tuple[list, list[list], str]]:
    """Per dataset read: test AUC (%) of each label, mean ± std over the seeds of one config id, and the mean;
    then the source's own per-label numbers (``reported_per_label``), each marked with where it comes from; and the
    footnote of the rows whose runs mix environments."""
    runs: dict[tuple, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    means: dict[tuple, dict[str, float]] = defaultdict(dict)
    run_rows: dict[tuple, dict[str, dict]] = defaultdict(dict)  # key -> run id -> one of its rows
    for r in rows:
        if r["split"] != "test":
            continue
        key = (r["dataset"], r["dataset_used"], r["method"], r["protocol"], r["fraction"] or 1.0,
               variant_label(parse_decisions(r["decisions"]), study.decisions), r["config_id"])
        m = _LABEL_AUC.match(r["metric"])
        if m:
            runs[key][r["run_id"]][int(m[1])] = r["value"]
        elif r["metric"] == "auc":
            means[key][r["run_id"]] = r["value"]
        run_rows[key][r["run_id"]] = r
    tags = tags_by_key({k: list(v.values()) for k, v in run_rows.items()}, len({r["precision"] for r in rows}) > 1)
    out: dict[str, tuple[list, list[list], str]] = {}
    for used in sorted({k[1] for k in runs}):
        keys = sorted(k for k in runs if k[1] == used)
        names = class_names(study, keys[0][0], used)
        shared = [names.index(n) for n in study.shared_labels.get(keys[0][0], ()) if n in names]
        headers = ["method", "protocol", "labels", "variant", *names, "mean AUC",
                   *(["mean AUC, shared labels"] if shared else []), "n"]
        table, notes = [], EnvironmentNotes()
        for key in keys:
            by_run = runs[key]
            cells = [_mean_std([v[j] for v in by_run.values() if j in v]) for j in range(len(names))]
            common = [_mean_std([float(np.mean([v[j] for j in shared if j in v])) for v in by_run.values()
                                 if any(j in v for j in shared)])] if shared else []
            variant = tagged(key[5], tags[key])
            mark = notes.mark(f"{key[2]}, {key[3]}, {format_fraction(key[4])}, {variant}", run_rows[key].values())
            table.append([key[2], key[3], format_fraction(key[4]), variant, *cells,
                          _mean_std(list(means[key].values())) + mark, *common, len(by_run)])
        for method, protocol, fraction, source, backed, values, mean in (reported or {}).get(keys[0][0], []):
            where = f"reported: {source}" if backed else f"reported, hard-coded (no run behind it): {source}"
            cells = [f"{values[j] * 100:.1f}" if j in values else "-" for j in range(len(names))]
            table.append([method, protocol, format_fraction(fraction), where, *cells,
                          f"{mean * 100:.1f}" if mean is not None else "-", *(["-"] if shared else []), "-"])
        out[used] = (headers, table, notes.note())
    return out


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"  # no run had both classes of this label among its scored images
    mean, std, _ = mean_std(values)
    return format_mean_std(mean, std)  # the count is the table's column n


def figure_runs(study: Study, db: Path, artifact: str, eval_ids: list[str]) -> dict[tuple[str, str], list[tuple]]:
    """The one run a figure draws per cell: (dataset cell, variant) -> [(method, protocol, fraction, dataset, run_id,
    path)], per method and protocol the lowest seed at the largest fraction that saved ``artifact``."""
    with connect(db, read_only=True, wait_s=30) as con:
        runs = con.execute(
            f"""SELECT r.run_id, {CELL_SOURCE_SQL}, r.dataset, r.method, r.protocol, coalesce(r.fraction, 1.0),
                       r.seed, r.decisions, a.path FROM runs r JOIN artifacts a USING (run_id)
               WHERE r.study = ? AND r.kind = 'evaluate' AND r.status = 'ok' AND a.name = ?
               AND r.run_id IN (SELECT unnest(?)) ORDER BY 6 DESC, r.seed, r.run_id""",
            [study.name, artifact, eval_ids]).fetchall()
    out: dict[tuple[str, str], dict[tuple[str, str], tuple]] = defaultdict(dict)
    variants = drawn_variants([{"decisions": r[7]} for r in runs])  # no panel of decision-free runs alone
    for rid, cell, dataset, method, protocol, fraction, _seed, decisions, path in runs:
        for variant in variants:
            if in_variant(parse_decisions(decisions), variant) and Path(path).is_file():
                out[(cell, variant)].setdefault((method, protocol), (method, protocol, fraction, dataset, rid, path))
    order = {m.name: i for i, m in enumerate(study.methods)}
    protocols = {p.name: i for i, p in enumerate(study.protocols)}
    return {k: sorted(v.values(), key=lambda c: (order.get(c[0], 99), protocols.get(c[1], 99)))
            for k, v in sorted(out.items())}


def slug(*parts: str) -> str:
    """A file name's part: 'nih_chestxray14 ← chexpert', 'corrected' -> 'nih_chestxray14_chexpert_corrected'."""
    return re.sub(r"[^a-z0-9]+", "_", "_".join(parts).lower()).strip("_")


def _title(study: Study, method: str, protocol: str, fraction: float) -> str:
    methods = {m.name: m.title for m in study.methods}
    label = f"{methods.get(method, method)} / {protocol}"
    return label + ("" if fraction == 1.0 else f" ({format_fraction(fraction)})")


def roc_figures(study: Study, db: Path, out: Path, eval_ids: list[str]) -> list[Path]:
    """ROC curve of each label (or class) from the stored test scores, one curve per method and protocol."""
    from sklearn.metrics import roc_auc_score, roc_curve

    written = []
    for (cell, variant), runs in figure_runs(study, db, TEST_SCORES, eval_ids).items():
        names = class_names(study, runs[0][3], cell)
        ncols = min(5, len(names))
        nrows = -(-len(names) // ncols)
        fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(3.2 * ncols, 3.0 * nrows))
        for ax in axes.flat[len(names):]:
            ax.axis("off")
        for method, protocol, fraction, _ds, _rid, path in runs:
            with np.load(path) as saved:
                scores, labels = saved["scores"], saved["labels"]
            for j, ax in zip(range(len(names)), axes.flat):
                y = labels[:, j] if labels.ndim == 2 else (labels == j).astype(int)
                known = y >= 0
                if len(np.unique(y[known])) < 2:
                    continue
                fpr, tpr, _ = roc_curve(y[known], scores[known, j])
                auc = roc_auc_score(y[known], scores[known, j])
                ax.plot(fpr, tpr, lw=1.2, label=f"{_title(study, method, protocol, fraction)}: {auc:.3f}")
        for j, ax in zip(range(len(names)), axes.flat):
            if not ax.lines:
                ax.text(0.5, 0.5, "one class only\namong the scored images", ha="center", va="center", fontsize=7)
            ax.plot([0, 1], [0, 1], color="grey", lw=0.6, ls="--")
            ax.set_title(names[j], fontsize=9)
            ax.set_xlabel("false positive rate", fontsize=7)
            ax.set_ylabel("true positive rate", fontsize=7)
            ax.tick_params(labelsize=6)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=5, loc="lower right")
        fig.suptitle(f"{study.title}\n{cell}, {variant_label({'v': variant})}: test ROC per label (lowest seed; "
                     "legend: AUC)", fontsize=10)
        fig.tight_layout()
        written += save_figure(fig, out, f"roc_{slug(cell, variant)}")
    return written


def gradcam_figures(study: Study, db: Path, out: Path, eval_ids: list[str]) -> list[Path]:
    """Grad-CAM of each model on the same test images, the rule-based lung mask outlined; per row the mean focus
    (share of the map above 0.7) and share of its energy in the lungs."""
    written = []
    for (cell, variant), runs in figure_runs(study, db, GRADCAM, eval_ids).items():
        names = class_names(study, runs[0][3], cell)
        saved = []
        for run in runs:
            with np.load(run[5]) as f:
                saved.append((run, {k: f[k] for k in f.files}))
        ncols = max(len(s["cams"]) for _, s in saved)
        fig, axes = plt.subplots(len(saved), ncols, squeeze=False, figsize=(1.9 * ncols, 2.1 * len(saved)))
        for i, ((method, protocol, fraction, _ds, _rid, _path), s) in enumerate(saved):
            for j, ax in enumerate(axes[i]):
                ax.axis("off")
                if j >= len(s["cams"]):
                    continue
                ax.imshow(s["images"][j], cmap="gray")
                ax.imshow(s["cams"][j].astype(np.float32), cmap="jet", alpha=0.4, vmin=0, vmax=1)
                ax.contour(s["masks"][j], levels=[0.5], colors="white", linewidths=0.6)
                target = int(s["targets"][j])
                ax.set_title(names[target] if target < len(names) else str(target), fontsize=6)
            energy = s["lung_energy"][np.isfinite(s["lung_energy"])]
            axes[i][0].text(-0.08, 0.5, f"{_title(study, method, protocol, fraction)}\nfocus "
                            f"{100 * s['focus'].mean():.1f} %, lungs "
                            + (f"{100 * energy.mean():.1f} %" if len(energy) else "-"),
                            transform=axes[i][0].transAxes, ha="right", va="center", fontsize=6)
        fig.suptitle(f"{study.title}\n{cell}, {variant_label({'v': variant})}: Grad-CAM for each image's most "
                     "probable finding; white: rule-based lung mask", fontsize=9)
        fig.tight_layout()
        written += save_figure(fig, out, f"gradcam_{slug(cell, variant)}")
    return written


def embedding_figures(study: Study, db: Path, out: Path, eval_ids: list[str]) -> list[Path]:
    """The stored 2-D test embeddings, coloured by finding (none, one by name, several), with silhouettes."""
    written = []
    for (cell, variant), runs in figure_runs(study, db, EMBEDDING, eval_ids).items():
        names = class_names(study, runs[0][3], cell)
        fig, axes = plt.subplots(1, len(runs), squeeze=False, figsize=(3.6 * len(runs), 3.6))
        for ax, (method, protocol, fraction, _ds, _rid, path) in zip(axes[0], runs):
            with np.load(path) as f:
                xy, cats, labels, score = f["xy"], f["categories"], f["labels"], float(f["silhouette"])
            multi = labels.ndim == 2
            legend = (["No Finding", *names, "Multiple"] if multi else list(names))
            for c in np.unique(cats):
                ax.scatter(xy[cats == c, 0], xy[cats == c, 1], s=5, alpha=0.7,
                           label=legend[c] if c < len(legend) else str(c))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{_title(study, method, protocol, fraction)}\nsilhouette "
                         + ("-" if np.isnan(score) else f"{score:.3f}"), fontsize=8)
        axes[0][0].legend(fontsize=5, markerscale=2)
        fig.suptitle(f"{study.title}\n{cell}, {variant_label({'v': variant})}: test features in 2-D (lowest seed)",
                     fontsize=9)
        fig.tight_layout()
        written += save_figure(fig, out, f"embedding_{slug(cell, variant)}")
    return written
