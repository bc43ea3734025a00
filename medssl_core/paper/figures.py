"""A study's figures from its runs: accuracy bars with the reported values, label efficiency, pretraining curves,
t-SNE of recorded test features, and the rule-based masks of the images it read."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sized
from pathlib import Path
from typing import TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from medssl_core.common.errors import MedsslError
from medssl_core.paper.analysis import (
    figure_runs,
)
from medssl_core.paper.classes import class_names, majority_rates
from medssl_core.paper.labels import (
    drawn_variants,
    format_fraction,
    in_variant,
    parse_decisions,
    variant_label,
    variant_title,
)
from medssl_core.paper.output import save_figure, seeds_said, wrap
from medssl_core.paper.rows import _order, _titles
from medssl_core.plan.runspec import RunSpec
from medssl_core.plan.study import AS_PUBLISHED, CORRECTED, Reported, Study
from medssl_core.store.records import TEST_FEATURES
from medssl_core.store.store import connect

SizedT = TypeVar("SizedT", bound=Sized)


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


def _reported_points(study: Study, rows: list[dict], metric: str) -> dict[tuple, list[Reported]]:
    """(dataset read, protocol, method) -> every number the source reports at full labels for the study dataset it
    stands for, in declaration order (the tables compare with the first; the figure shows each, a hard-coded one
    with its own marker)."""
    stands_for = {(r["dataset_used"], r["dataset"]) for r in rows}
    out: dict[tuple, list[Reported]] = defaultdict(list)
    for rep in study.reported:
        if rep.metric == metric and rep.value is not None and (rep.fraction or 1.0) == 1.0:
            for used, ds in stands_for:
                if ds == rep.dataset:
                    out[(used, rep.protocol, rep.method)].append(rep)
    return out


def accuracy_figure(study: Study, rows: list[dict], metric: str, out: Path) -> list[Path]:
    """Horizontal bars from 0 %, one per method and protocol evaluating it: the mean over seeds, the sample std as
    an error bar only where n > 1, n and the mean written on the bar, 'not run' where a planned bar has no runs,
    the source's numbers as markers on the bar's row (hard-coded ones with their own marker) and, for accuracy, the
    test split's majority-class rate as a dashed line."""
    methods, protocols, _ = _titles(study)
    bars, several = accuracy_bars(rows, metric)
    if not bars:
        return []
    variants = [v for v in drawn_variants(rows) if any(k[0] == v for k in bars)]
    datasets = sorted({k[1] for k in bars})
    reported = _reported_points(study, rows, metric)
    majority = majority_rates(rows) if metric == "accuracy" else {}
    drawn = {bar for by_bar in bars.values() for bar in by_bar} | {k[1:] for k in reported}
    proto_names = [p.name for p in study.protocols if any(bar[0] == p.name for bar in drawn)]
    method_names = [m.name for m in study.methods if any(bar[1] == m.name for bar in drawn)]
    evaluates = {p.name: p.methods for p in study.protocols}
    # one row per (method, protocol evaluating it), methods top to bottom in the study's order
    slots = [(m, p) for m in method_names for p in proto_names if evaluates[p] is None or m in evaluates[p]]
    ys = {slot: -i - 0.6 * method_names.index(slot[0]) for i, slot in enumerate(slots)}  # a gap between methods
    colors = dict(zip(proto_names, plt.get_cmap("tab10").colors, strict=False))
    panels = [(v, ds) for v in variants for ds in datasets]
    shape = (len(variants), len(datasets)) if len(datasets) > 1 else (1, len(variants))  # one dataset: side by side
    fig, axes = plt.subplots(*shape, squeeze=False, sharey=True, layout="constrained",
                             figsize=(2.2 + 4.6 * shape[1], 1.2 + (0.3 * len(slots) + 0.6) * shape[0]))
    for ax, (variant, ds) in zip(axes.flat, panels, strict=True):
        here = bars.get((variant, ds), {})
        for (m, p), y in ys.items():
            _draw_bar(ax, y, here.get((p, m), []), colors[p], protocols.get(p, p), reported.get((ds, p, m), []))
        if ds in majority:
            ax.axvline(majority[ds], color="0.3", ls="--", lw=1, label="majority class of the test split")
            ax.annotate(f"majority\nclass {majority[ds]:.1f} %", (majority[ds], 1), xycoords=("data", "axes fraction"),
                        xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=7,
                        color="0.3")
        ax.set_xlim(0, 100)
        ax.set_xlabel(f"test {metric} (%), axis from 0")
        ax.set_title(f"{ds}: {variant_title(variant, study.decisions)}", fontsize=9, pad=22 if ds in majority else 6)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="y", labelsize=8)
    centres = {m: np.mean([y for (mm, _), y in ys.items() if mm == m]) for m in method_names}
    axes[0][0].set_yticks(list(centres.values()), [wrap(methods.get(m, m)) for m in centres], fontsize=8)
    handles = {}
    for ax in axes.flat:
        handles.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    more = "; where a bar has runs of several configs, the one with most seeds (all in cells.csv)" if several else ""
    fig.suptitle(wrap(f"{study.title}: test {metric}, mean ± sample std over n seeds (no error bar at n = 1)"
                       f"{more}", 110), fontsize=10)
    return save_figure(fig, out, "accuracy")


def _draw_bar(ax, y: float, values: list[float], color, label: str, reported: list[Reported]) -> None:
    """One bar of ``values`` (%) at ``y``, or 'not run', and the source's numbers on its row."""
    if values:
        mean = float(np.mean(values))
        ax.barh(y, mean, 0.8, color=color, label=label)
        if len(values) > 1:
            ax.errorbar(mean, y, xerr=np.std(values, ddof=1), fmt="none", ecolor="black", capsize=2, lw=1)
        inside = mean > 30
        ax.text(1.5 if inside else mean + 1.5, y, f"{mean:.1f}  n={len(values)}", va="center", fontsize=7,
                color="white" if inside else "black")
    else:
        ax.text(1.5, y, f"not run: {label}", va="center", fontsize=7, color="0.4", style="italic")
    for rep in reported:
        backed = rep.backed_by_runs
        ax.plot(rep.value * 100, y, "D" if backed else "X", color="black" if backed else "crimson", ms=5,
                label="reported (the source's runs)" if backed else "reported, hard-coded (no run behind it)")


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
    """The pretraining curves (loss, kNN monitor) of the runs ``pretrain_ids``, read from the store."""
    with connect(db, read_only=True, wait_s=30) as con:
        data = con.execute(
            """SELECT r.run_id, r.dataset_used, r.method, r.decisions, c.step,
                      CASE WHEN c.name = 'loss' THEN 'loss' ELSE 'knn' END, c.value, r.config_id FROM runs r
               JOIN curves c USING (run_id) WHERE r.study = ? AND r.kind = 'pretrain' AND r.status = 'ok'
               AND r.run_id IN (SELECT unnest(?)) AND c.name IN ('loss', 'knn_val_accuracy', 'knn_val_auc')
               ORDER BY c.step""",
            [study.name, pretrain_ids]).fetchall()
    return draw_curves(study, data, out)


def draw_curves(study: Study, data: list[tuple], out: Path) -> list[Path]:
    """The curves figure from rows (run id, dataset read, method, decisions, epoch, 'loss' or 'knn', value, config
    id): one loss panel per method and dataset, then the kNN monitor, its legend outside the axes."""
    methods, _, _ = _titles(study)
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
        return steps, np.array([np.mean(series[t]) for t in steps]), np.array(
            [np.std(series[t], ddof=1) if len(series[t]) > 1 else 0.0 for t in steps])

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
            knn_ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)  # off the lines
    more = ("; where a curve has runs of several configs, the one with most seeds"
            if any(len(by_config) > 1 for by_config in configs.values()) else "")
    seeds = seeds_said({len(runs) for runs in drawn.values()})
    fig.suptitle(wrap(f"{study.name}: pretraining curves, {seeds} (solid: as published, dashed: corrected){more}",
                      110), fontsize=11)
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
