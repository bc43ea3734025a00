"""The figures read as a user reads them: built from metric rows written here (no training), checked on the
matplotlib objects they draw and on the files they save."""

from __future__ import annotations

import dataclasses
import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from medssl_core.paper import classes, figures
from medssl_core.paper.classes import confusion_figures, majority_rates
from medssl_core.plan.catalog import get_study
from medssl_core.plan.study import Reported

_ids = itertools.count()


def metric_rows(dataset: str, method: str, protocol: str, accuracy: float, seeds: int = 1, *, used: str | None = None,
                decisions: str = "", confusion: tuple[tuple[int, ...], ...] | None = None) -> list[dict]:
    """The metric rows ``paper.rows.load_rows`` gives for ``seeds`` runs of one config: test accuracy ``accuracy``
    (+1 point a seed) and, where given, the test confusion counts (true x predicted)."""
    config = f"cfg-{dataset}-{method}-{protocol}-{decisions}"
    out = []
    for seed in range(seeds):
        run = f"run{next(_ids)}"
        base = {"run_id": run, "config_id": config, "dataset": dataset, "dataset_used": used or dataset,
                "method": method, "protocol": protocol, "fraction": 1.0, "seed": seed, "profile": "quick",
                "decisions": decisions, "split": "test", "kept_stale": "", "tuned": False, "precision": "fp32",
                "environment": "torch 2, cpu, fp32", "decision_free": config}
        out.append({**base, "metric": "accuracy", "value": accuracy + seed / 100})
        for t, counts in enumerate(confusion or ()):
            out += [{**base, "metric": f"confusion_{t}_{p}", "value": float(c)} for p, c in enumerate(counts)]
    return out


@pytest.fixture
def drawn(monkeypatch):
    """stem -> the figure a function would have saved, drawn (so that text has its place) and kept open."""
    kept: dict[str, plt.Figure] = {}

    def keep(fig, out, stem):
        fig.canvas.draw()
        kept[stem] = fig
        return [out / f"{stem}.png"]

    monkeypatch.setattr(figures, "save_figure", keep)
    monkeypatch.setattr(classes, "save_figure", keep)
    yield kept
    plt.close("all")


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def _overlaps_data_area(fig, legend) -> bool:
    box = legend.get_window_extent()
    return any(ax.get_window_extent().overlaps(box) for ax in fig.axes if ax.axison and ax.has_data())


BREAST = ((30, 12), (8, 106))  # BreastMNIST's test split: 42 malignant, 114 normal/benign


def test_accuracy_bars_have_an_error_bar_only_where_n_is_over_one_and_say_n(tmp_path, drawn):
    published = "crop_scale=as_published"
    rows = (metric_rows("breast_us", "simclr", "knn", 0.75, 1, used="breastmnist", decisions=published)
            + metric_rows("breast_us", "simclr", "linear", 0.72, 1, used="breastmnist", decisions=published)
            + metric_rows("breast_us", "random_init", "knn", 0.70, 3, used="breastmnist"))
    figures.accuracy_figure(get_study("demo"), rows, "accuracy", tmp_path)
    (ax,) = [a for a in drawn["accuracy"].axes if a.has_data()]
    assert len([c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]) == 1  # random init only
    texts = _texts(ax)
    assert any("n=1" in t for t in texts) and any("n=3" in t for t in texts)
    assert ax.get_xlim()[0] == 0  # bars start at 0 %
    assert [t for t in texts if t.startswith("not run")] == ["not run: Linear probe"]  # random init's
    assert "n = 1" in drawn["accuracy"].get_suptitle() and "±" in drawn["accuracy"].get_suptitle()


def test_reported_numbers_are_markers_hard_coded_ones_their_own(tmp_path, drawn):
    study = get_study("medmnist_ssl")
    typed_in = [Reported("breastmnist", method, "finetune", "accuracy", 0.8, "a paper table", backed_by_runs=False)
                for method in ("simclr", "random_init")]  # random init's shares its cell with Table 3's
    study = dataclasses.replace(study, reported=(*study.reported, *typed_in))
    rows = (metric_rows("breastmnist", "random_init", "finetune", 0.85, 2)
            + metric_rows("breastmnist", "simclr", "finetune", 0.86, 2))
    figures.accuracy_figure(study, rows, "accuracy", tmp_path)
    (ax,) = [a for a in drawn["accuracy"].axes if a.has_data()]
    markers = [line.get_marker() for line in ax.get_lines()]
    # Table 3's accuracy of the four supervised networks on BreastMNIST, and the two typed in
    assert markers.count("D") == 4 and markers.count("X") == 2
    diamonds = sorted(line.get_xdata()[0] for line in ax.get_lines() if line.get_marker() == "D")
    assert diamonds == pytest.approx([81.2, 83.3, 84.2, 86.3])
    assert sum(t.startswith("not run") for t in _texts(ax)) == 3  # the supervised nets with a reported number only
    legend = drawn["accuracy"].legends[0]
    assert {"reported (the source's runs)", "reported, hard-coded (no run behind it)"} <= {
        t.get_text() for t in legend.get_texts()}


def test_majority_class_line_from_the_test_labels_and_legend_below_the_bars(tmp_path, drawn):
    study = get_study("smalldatassl")
    corrected = ",".join(f"{d.name}=corrected" for d in study.decisions)
    rows = [r for m in ("simclr", "dclw", "simsiam", "vicreg") for p in ("knn", "mlp_head", "linear")
            for r in metric_rows("kermany_cxr", m, p, 0.7, 2, used="pneumoniamnist", decisions=corrected,
                                 confusion=((150, 84), (40, 350)))]
    assert majority_rates(rows) == pytest.approx({"pneumoniamnist": 100 * 390 / 624})
    figures.accuracy_figure(study, rows, "accuracy", tmp_path)
    fig = drawn["accuracy"]
    (ax,) = [a for a in fig.axes if a.has_data()]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_xdata()[0] == pytest.approx(62.5)
    assert "majority class of the test split" in {t.get_text() for t in fig.legends[0].get_texts()}
    assert not _overlaps_data_area(fig, fig.legends[0])
    # AUC has no majority rate
    figures.accuracy_figure(study, [{**r, "metric": "auc"} if r["metric"] == "accuracy" else r for r in rows],
                            "auc", tmp_path)
    (ax,) = [a for a in drawn["accuracy"].axes if a.has_data()]
    assert not [line for line in ax.get_lines() if line.get_linestyle() == "--"]


def test_one_confusion_grid_per_dataset_of_the_main_protocol_with_percent_rows_and_counts(tmp_path, drawn):
    study = get_study("smalldatassl")
    rows = []
    for variant in ("as_published", "corrected"):
        decisions = ",".join(f"{d.name}={variant}" for d in study.decisions)
        for m in ("simclr", "dclw", "random_init"):
            for p in ("knn", "mlp_head", "linear"):
                rows += metric_rows("kermany_cxr", m, p, 0.7, 1, used="pneumoniamnist", decisions=decisions,
                                    confusion=((150, 84), (40, 350)))
        rows += metric_rows("kermany_cxr", "imagenet", "linear", 0.7, 1, used="pneumoniamnist", decisions=decisions,
                            confusion=((200, 34), (20, 370)))
    rows += metric_rows("breakhis400x", "simclr", "linear", 0.8, 2, confusion=((50, 10), (5, 100)))
    confusion_figures(study, rows, tmp_path)
    assert sorted(drawn) == ["confusion_breakhis400x", "confusion_kermany_cxr"]
    fig = drawn["confusion_kermany_cxr"]
    panels = [ax for ax in fig.axes if ax.get_images()]
    # the linear probe (which evaluates most methods), corrected: 4 panels, not 3 protocols x 2 variants x 4
    assert len(panels) == 4 and "Linear probe" in fig.get_suptitle() and "corrected" in fig.get_suptitle()
    assert [ax.get_title().split("\n")[0] for ax in panels] == [
        "SimCLR", "DCLW", "Random init (reference)", "ImageNet supervised"]
    rates = panels[-1].get_images()[0].get_array()
    assert np.asarray(rates).sum(axis=1) == pytest.approx([100, 100])
    assert "85 %\n(200)" in _texts(panels[-1])  # 200 of 234 normal images, as % and as a count
    assert any(ax.get_ylabel() == "% of the true class" for ax in fig.axes)  # the colour bar
    title = fig._suptitle.get_window_extent()
    assert not any(ax.title.get_window_extent().overlaps(title) for ax in panels)


def test_confusion_figures_write_one_png_per_dataset(tmp_path):
    rows = metric_rows("breast_us", "simclr", "knn", 0.7, 2, used="breastmnist", confusion=BREAST)
    written = confusion_figures(get_study("demo"), rows, tmp_path)
    assert [p.name for p in written] == ["confusion_breast_us.png", "confusion_breast_us.pdf"]
    assert written[0].stat().st_size > 10_000


def _curve_rows(seeds: int) -> list[tuple]:
    return [(f"run{s}", "breastmnist", method, "crop_scale=as_published", epoch, name, 1.0 + s / 10 + epoch,
             f"cfg-{method}") for s in range(seeds) for method in ("simclr",) for epoch in (1, 2, 3)
            for name in ("loss", "knn")]


@pytest.mark.parametrize(("seeds", "said", "unsaid"), [(1, "n = 1", "±"), (3, "mean ± sample std over n = 3 seeds",
                                                                            "n = 1")])
def test_curves_say_over_how_many_seeds_and_keep_the_legend_off_the_lines(tmp_path, drawn, seeds, said, unsaid):
    figures.draw_curves(get_study("demo"), _curve_rows(seeds), tmp_path)
    fig = drawn["pretraining_curves"]
    assert said in fig.get_suptitle() and unsaid not in fig.get_suptitle()
    (legend,) = [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert not _overlaps_data_area(fig, legend)
