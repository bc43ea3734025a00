"""Multi-label tasks with missing (uncertain) labels through kNN, metrics, configuration and fitting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score, roc_auc_score

from medssl_core import config
from medssl_core.common.errors import ConfigError, DataError
from medssl_core.data.labels import MISSING
from medssl_core.evaluate.features import knn_monitor_score, knn_predict, mean_roc_auc
from medssl_core.evaluate.knn import knn_evaluate
from medssl_core.evaluate.metrics import choose_thresholds, classification_metrics
from medssl_core.run.evaluate import check_labels
from medssl_core.train.finetune import Classifier, fit_classifier

N_LABELS, DIM = 3, 6


def synthetic(n: int, seed: int, *, missing: float = 0.25, unlabelled: int = 6):
    """Features whose first coordinates carry the labels; a ``missing`` share of labels and ``unlabelled``
    whole rows set to MISSING."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, DIM, generator=g)
    y = (x[:, :N_LABELS] + 0.7 * torch.randn(n, N_LABELS, generator=g) > 0.3).long()
    y[torch.rand(n, N_LABELS, generator=g) < missing] = MISSING
    y[:unlabelled] = MISSING
    return x, y


def ref_multilabel_votes(train_f, train_y, query_f, k):
    """Loop from the definition: drop unlabelled rows, k nearest, positive share among those that observed it,
    else the label's positive share among the observed training labels."""
    keep = (train_y != MISSING).any(1)
    train_f, train_y = train_f[keep], train_y[keep]
    out = np.zeros((len(query_f), train_y.shape[1]))
    for q in range(len(query_f)):
        near = np.argsort(np.linalg.norm(train_f - query_f[q], axis=1), kind="stable")[:k]
        for j in range(train_y.shape[1]):
            votes = train_y[near, j][train_y[near, j] != MISSING]
            known = train_y[:, j][train_y[:, j] != MISSING]
            out[q, j] = votes.mean() if len(votes) else (known.mean() if len(known) else 0.5)
    return out


def test_multilabel_knn_votes_match_reference_and_missing_neighbours_do_not_vote():
    train_x, train_y = synthetic(80, 0, missing=0.5)
    query_x, _ = synthetic(20, 1)
    pred, scores = knn_predict(train_x.double(), train_y, query_x.double(), k=5)
    want = ref_multilabel_votes(train_x.double().numpy(), train_y.numpy(), query_x.double().numpy(), 5)
    np.testing.assert_allclose(scores.numpy(), want, rtol=1e-6)
    assert torch.equal(pred, (scores > 0.5).long()) and pred.shape == (20, N_LABELS)


def test_label_with_no_voting_neighbour_scores_its_prior():
    train_x = torch.tensor([[0.0], [0.1], [10.0], [10.1]])
    train_y = torch.tensor([[1, MISSING], [0, MISSING], [1, 1], [1, 0]])
    _, scores = knn_predict(train_x, train_y, torch.tensor([[0.05]]), k=2)
    assert scores[0].tolist() == pytest.approx([0.5, 0.5])  # label 1: nobody near observed it; prior 1/2
    _, scores = knn_predict(train_x, torch.tensor([[1, MISSING], [0, MISSING], [1, 1], [1, 1]]),
                            torch.tensor([[0.05]]), k=2)
    assert scores[0, 1].item() == pytest.approx(1.0)  # prior of label 1 is 2/2, not a fixed 0.5


def test_single_label_knn_drops_missing_and_is_unchanged_without():
    train_x, y3 = synthetic(60, 2, missing=0.0, unlabelled=0)
    y = y3[:, 0] + y3[:, 1]  # classes 0..2
    query = torch.randn(10, DIM)
    with_missing = torch.cat([y, torch.full((5,), MISSING)])
    extra = torch.randn(5, DIM) * 0.01 + query[:1]  # right beside a query: would vote if not dropped
    a = knn_predict(torch.cat([train_x, extra]), with_missing, query, k=7)
    b = knn_predict(train_x, y, query, k=7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 60), st.integers(1, 4), st.integers(0, 10_000))
def test_torch_mean_auc_equals_sklearn_with_ties_and_missing(n, n_labels, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(-1, 2, (n, n_labels))
    s = rng.integers(0, 4, (n, n_labels)) / 3  # few values: many ties
    aucs = [roc_auc_score(y[y[:, j] >= 0, j], s[y[:, j] >= 0, j]) for j in range(n_labels)
            if len(np.unique(y[y[:, j] >= 0, j])) == 2]
    got = mean_roc_auc(torch.tensor(s), torch.tensor(y))
    assert (math.isnan(got) and not aucs) or got == pytest.approx(np.mean(aucs), abs=1e-12)


def test_monitor_score_is_accuracy_single_label_and_mean_auc_multi_label():
    train_x, train_y = synthetic(80, 3)
    val_x, val_y = synthetic(40, 4)
    single = knn_monitor_score(train_x, train_y[:, 0].clamp_min(0), val_x, val_y[:, 0].clamp_min(0), k=5)
    pred, _ = knn_predict(train_x, train_y[:, 0].clamp_min(0), val_x, k=5)
    assert single == (pred == val_y[:, 0].clamp_min(0)).float().mean().item()
    multi = knn_monitor_score(train_x, train_y, val_x, val_y, k=5)
    _, scores = knn_predict(train_x, train_y, val_x, k=5)
    assert multi == pytest.approx(classification_metrics("multi-label", val_y.numpy(), scores.numpy())["auc"])


def test_metrics_mask_missing_labels_and_never_report_accuracy():
    _, y = synthetic(50, 5)
    scores = np.random.default_rng(0).random(y.shape)
    y, m = y.numpy(), classification_metrics("multi-label", y.numpy(), scores)
    assert "accuracy" not in m and 0 <= m["label_accuracy"] <= 1 and m["collapsed"] == 0.0
    for j in range(N_LABELS):
        known = y[:, j] != MISSING
        assert m[f"auc_label{j}"] == pytest.approx(roc_auc_score(y[known, j], scores[known, j]))
    assert m["auc"] == pytest.approx(np.mean([m[f"auc_label{j}"] for j in range(N_LABELS)]))
    garbage = np.where(y == MISSING, np.random.default_rng(1).random(y.shape), scores)  # what masked entries get
    assert classification_metrics("multi-label", y, garbage) == m
    assert np.array_equal(choose_thresholds("multi-label", y, garbage), choose_thresholds("multi-label", y, scores))
    all_negative = classification_metrics("multi-label", y, np.zeros(y.shape))
    assert all_negative["collapsed"] == 1.0 and all_negative["auc"] == 0.5


def test_label_accuracy_is_at_threshold_half_and_tuned_thresholds_have_names_of_their_own():
    """MedMNIST's ACC (Table 3's ChestMNIST column) is per-label accuracy at 0.5: the number under that name. What
    thresholds tuned for F1 give is recorded beside it as ``*_tuned``, as the runs record it (thresholds from val)."""
    n, prevalence = 40, np.array([0.5, 0.2, 0.1, 0.05])  # skewed, as ChestX-ray14's findings
    y = (np.arange(n)[:, None] < prevalence * n).astype(int)  # 20, 8, 4 and 2 positives
    rng = np.random.default_rng(0)
    scores = np.where(y == 1, rng.uniform(0.2, 0.9, y.shape), rng.uniform(0.0, 0.6, y.shape))
    tuned = choose_thresholds("multi-label", y, scores)
    assert not np.allclose(tuned, 0.5)
    m = classification_metrics("multi-label", y, scores, tuned)
    assert m["label_accuracy"] == ((scores >= 0.5) == y).mean()
    assert m["label_accuracy_tuned"] == ((scores >= tuned) == y).mean() != m["label_accuracy"]
    assert m["f1"] == pytest.approx(np.mean([f1_score(y[:, j], scores[:, j] >= 0.5) for j in range(4)]))
    assert m["f1_tuned"] == pytest.approx(np.mean([f1_score(y[:, j], scores[:, j] >= tuned[j]) for j in range(4)]))
    # binary: F1 at 0.5 on the positive column, and at the tuned threshold under its own name
    yb, sb = y[:, 1], np.stack([1 - scores[:, 1], scores[:, 1]], axis=1)
    tb = choose_thresholds("binary", yb, sb)
    b = classification_metrics("binary", yb, sb, tb)
    assert (b["f1"], b["f1_tuned"]) == (pytest.approx(f1_score(yb, sb[:, 1] >= 0.5)),
                                        pytest.approx(f1_score(yb, sb[:, 1] >= tb[0])))
    # validation's selection scores without tuned thresholds: no tuned metric then
    assert not any(k.endswith("_tuned") for k in classification_metrics("multi-label", y, scores))


def _evaluate_hp(task: str, n_classes: int, **fit) -> dict:
    return {"image_size": 28, "channels": 1, "n_classes": n_classes, "task": task,
            "split": {"scheme": "official"}, "backbone": {"arch": "resnet18"},
            "augment": {"mean": [0.5], "std": [0.5]},
            "protocol": {"kind": "fit", "head": {},
                         "fit": {"epochs": 1, "batch_size": 8, "optimizer": {"name": "adam", "lr": 1e-3}, **fit}}}


def test_config_writes_task_defaults_and_refuses_what_does_not_suit_the_task():
    ml = config.validate(config.EvaluateHP, _evaluate_hp("multi-label", 14), "t", for_spec=True)["protocol"]["fit"]
    assert ml["select_metric"] == "auc" and ml["loss"] == {"name": "bce", "label_smoothing": 0.0,
                                                           "focal_gamma": 2.0, "focal_alpha": None}
    mc = config.validate(config.EvaluateHP, _evaluate_hp("multi-class", 9), "t")["protocol"]["fit"]
    assert mc["select_metric"] == "accuracy" and mc["loss"]["name"] == "ce"
    with pytest.raises(ConfigError, match="select_metric 'accuracy' on a multi-label task"):
        config.validate(config.EvaluateHP, _evaluate_hp("multi-label", 14, select_metric="accuracy"), "t")
    with pytest.raises(ConfigError, match="'bce' does not suit a multi-class task"):
        config.validate(config.EvaluateHP, _evaluate_hp("multi-class", 9, loss={"name": "bce"}), "t")
    with pytest.raises(ConfigError, match="focal_alpha: null"):
        config.validate(config.EvaluateHP, _evaluate_hp("multi-label", 14, loss={"name": "focal", "focal_alpha": 1}),
                        "t")
    with pytest.raises(ConfigError, match="9-class task"):
        config.validate(config.EvaluateHP, _evaluate_hp("multi-class", 9, loss={"name": "focal", "focal_alpha": 0.25}),
                        "t")
    with pytest.raises(ConfigError, match="unknown key"):
        config.validate(config.EvaluateHP, _evaluate_hp("multi-label", 14, loss={"name": "bce", "gamma": 2}), "t")


def test_label_shapes_checked_against_the_task():
    check_labels(np.array([[0, 1, MISSING]]), "multi-label", 3, "x")
    check_labels(np.array([0, 2, MISSING]), "multi-class", 3, "x")
    with pytest.raises(DataError, match=r"expects \(N, 4\)"):
        check_labels(np.array([[0, 1, 1]]), "multi-label", 4, "x")
    with pytest.raises(DataError, match=r"class indices 0\.\.1"):
        check_labels(np.array([0, 2]), "binary", 2, "x")


# -- end to end: features in, metrics out -------------------------------------------------------------------
def _splits():
    return {s: synthetic(n, seed) for s, n, seed in (("train", 96, 10), ("val", 48, 11), ("test", 48, 12))}


def _scramble_unlabelled(data):
    """The features of rows with no observed label replaced: no number may change."""
    out = {}
    for split, (x, y) in data.items():
        x = x.clone()
        unlabelled = (y == MISSING).all(1)
        x[unlabelled] = torch.randn(int(unlabelled.sum()), DIM, generator=torch.Generator().manual_seed(99)) * 5
        out[split] = (x, y)
    return out


def _fit(data, loss: dict):
    torch.manual_seed(0)
    cfg = config.Fit(epochs=4, batch_size=16, optimizer={"name": "adam", "lr": 0.05}, loss=loss)
    return fit_classifier(Classifier(None, torch.nn.Linear(DIM, N_LABELS)), data, "multi-label", cfg,
                          prepare=lambda t: t, seed=0, device=torch.device("cpu"))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


@pytest.mark.parametrize("loss", [{}, {"name": "focal", "focal_gamma": 2.0, "focal_alpha": 0.25,
                                       "label_smoothing": 0.05}])
def test_fit_end_to_end_selects_and_reports_mean_auc_and_ignores_missing(loss):
    data = _splits()
    result = _fit(data, loss)
    test = result.metrics["test"]
    assert "accuracy" not in test and test["auc"] > 0.7
    assert test["auc"] == pytest.approx(np.mean([test[f"auc_label{j}"] for j in range(N_LABELS)]))
    assert {c["name"] for c in result.curves} == {"train_loss", "val_loss", "val_auc"}
    again = _fit(_scramble_unlabelled(data), loss)
    assert again.best_epoch == result.best_epoch and again.curves == result.curves
    assert all(_same(again.metrics[s], result.metrics[s]) for s in data)


def test_knn_end_to_end_reports_mean_auc_and_ignores_missing():
    data = _splits()

    def run(d):
        return knn_evaluate(d["train"][0], d["train"][1], {s: d[s] for s in ("val", "test")}, "multi-label",
                            k=7, metric="euclidean", n_classes=N_LABELS)

    metrics = run(data)
    assert "accuracy" not in metrics["test"] and metrics["test"]["auc"] > 0.7
    again = run(_scramble_unlabelled(data))
    assert all(_same(again[s], metrics[s]) for s in metrics)
    with pytest.raises(ConfigError, match="n_classes is 5"):
        knn_evaluate(data["train"][0], data["train"][1], {"test": data["test"]}, "multi-label", k=7,
                     metric="euclidean", n_classes=5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=1, max_size=40),
       st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=0, max_size=40))
def test_decision_counts_equal_sklearns_scores(first, second):
    """F1, precision and recall are counted directly (sklearn's scorers were the slowest part of a multi-label fit):
    the same numbers as sklearn with zero_division=0, including labels never predicted or never present."""
    from sklearn import metrics as skm

    from medssl_core.evaluate.metrics import _decision_means

    decided = [(np.array([y for y, _ in pairs]), np.array([p for _, p in pairs])) for pairs in (first, second) if pairs]
    ours = _decision_means(decided)
    for name, score in (("f1", skm.f1_score), ("precision", skm.precision_score), ("recall", skm.recall_score)):
        expected = np.mean([score(y, p, zero_division=0) for y, p in decided])
        assert ours[name] == pytest.approx(expected), name
