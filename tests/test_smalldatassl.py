"""SmallDataSSL: the declaration, and a reduced quick replication end to end on the real PneumoniaMNIST."""

from __future__ import annotations

import csv
import statistics
from dataclasses import replace

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from medssl_core.cli import main
from medssl_core.common.errors import ConfigError
from medssl_core.config import Split, parse
from medssl_core.data import get_dataset
from medssl_core.data.dataset import ArrayDataset
from medssl_core.data.split_schemes import assign
from medssl_core.execute.local import execute
from medssl_core.execute.tune import overrides_of
from medssl_core.paper.generate import generate
from medssl_core.plan.catalog import get_study
from medssl_core.plan.grid import expand
from medssl_core.plan.study import deep_merge
from medssl_core.store import run_sql
from tests.conftest import cpu_store, execute_cleanly

STUDY = get_study("smalldatassl")


def test_declaration_matches_the_code_facts(medmnist_dir):
    plan = expand(STUDY, "paper", data_dir=medmnist_dir)  # plans the 224 px download, does not start it
    pre = {(s.method, s.decisions.get("crop_scale"), s.seed) for s in plan.pretrain}
    assert {m for m, _, _ in pre} == {"simclr", "dclw", "simsiam", "vicreg", "barlow"}
    simclr = next(s for s in plan.pretrain if s.method == "simclr" and set(s.decisions.values()) == {"as_published"})
    hp = simclr.hparams
    assert hp["backbone"]["arch"] == "resnet50" and hp["image_size"] == 224 and simclr.dataset_used == "pneumoniamnist"
    assert hp["augment"]["crop_scale"] == [0.08, 0.1] and hp["channel_mode"] == "rgb"
    opt = hp["train"]["optimizer"]
    assert (opt["name"], opt["lr"], opt["momentum"], opt["weight_decay"]) == ("sgd", 0.01, 0.0, 0.0)
    assert hp["train"]["epochs"] == 250 and hp["train"]["batch_size"] == 64 and hp["train"]["knn_k"] == 200
    assert hp["method"]["loss_kwargs"] == {"temperature": 0.5} and hp["method"]["projector"] == [512, 128]
    dclw = next(s for s in plan.pretrain if s.method == "dclw" and s.decisions["dclw_symmetric"] == "as_published")
    assert dclw.hparams["method"]["loss_kwargs"] == {"temperature": 0.1, "sigma": 0.5, "symmetric": False,
                                                     "detach_weights": False}  # defaults written out
    simsiam = [s for s in plan.pretrain if s.method == "simsiam"]
    assert {str(s.hparams["method"]["predictor"]) for s in simsiam} == {"None", "[128, 512]"}
    mlp = next(s for s in plan.evaluate if s.protocol == "mlp_head" and s.decisions["mlp_head_lr"] == "as_published")
    assert mlp.hparams["protocol"]["fit"]["optimizer"]["lr"] == 1.0 and mlp.hparams["protocol"]["backbone_bn_train"]
    # PneumoniaMNIST ships official splits: the split-seeding decision is moot there and not recorded
    assert all("split_seed" not in s.decisions for s in plan.specs)
    # per seed: as published, each flip that changes a pretraining (crop, momentum, grey input, epochs, and the
    # method's own), all corrected; evaluation-only flips share the as-published pretraining
    assert len(plan.pretrain) == 3 * (6 + 7 + 7 + 6 + 6)
    knn = next(s for s in plan.evaluate if s.protocol == "knn")
    assert knn.hparams["split"]["script"] == knn.pretrain.hparams["split"]["script"] == "main.py"
    assert any("imagenet" in what for what, _ in plan.skipped)


def test_quick_profile_runs_the_as_published_variant_once(medmnist_dir):
    plan = expand(STUDY, "quick", data_dir=medmnist_dir)
    seeds = {(s.method, s.seed, s.decisions["crop_scale"]) for s in plan.pretrain}
    assert len(plan.pretrain) == 4 * 3 and len(seeds) == 12
    assert {seed for _, seed, v in seeds if v == "as_published"} == {0}
    assert {seed for _, seed, v in seeds if v == "corrected"} == {0, 1}
    # asked seeds replace the profile's for every variant
    assert len(expand(STUDY, "quick", data_dir=medmnist_dir, seeds=[3, 4]).pretrain) == 4 * 2 * 2
    with pytest.raises(ConfigError, match="variant_seeds names \\['each'\\]"):
        replace(STUDY.profile("quick"), variant_seeds={"each": (0,)})


def planned(dataset: str, variant: str, **kw):
    """The paper profile's runs on ``dataset`` as declared, without its data (as `medssl paper` plans them)."""
    return expand(STUDY, "paper", every_source=True, fingerprint_data=False, allow_download=False,
                  datasets=[dataset], variant_names=[variant], seeds=[0], **kw)


def test_as_published_splits_are_sklearns_unstratified_train_test_split():
    """getdf_Colorectal: train_test_split(df, test_size=0.2, random_state=16), then 0.1 of the rest, neither with
    stratify= (the unseeded shuffle before them aside, decision split_seed)."""
    published = planned("kather2016", "as_published", methods=["simclr"], protocols=["mlp_head"])
    split = parse(Split, published.evaluate[0].hparams["split"], "kather2016")
    assert not split.stratify and all(not s.hparams["split"]["stratify"] for s in published.specs)
    labels = np.repeat(np.arange(8), 625)  # Kather 2016: 8 classes of 625 tiles
    ds = ArrayDataset(get_dataset("kather2016"), 2, {"all": np.zeros((5000, 2, 2, 3), np.uint8)}, {"all": labels})
    got = assign(ds, split, 16)
    rest, test = train_test_split(np.arange(5000), test_size=0.2, random_state=16)
    train, val = train_test_split(rest, test_size=0.1, random_state=16)
    for role, expected in (("train", train), ("val", val), ("test", test)):
        assert got.of(role).tolist() == expected.tolist(), role  # 3,600 / 400 / 1,000, in sklearn's order
    assert len(set(np.bincount(labels[got.test]))) > 1  # classes drawn unevenly
    corrected = parse(Split, planned("kather2016", "corrected", methods=["simclr"],
                                     protocols=["mlp_head"]).evaluate[0].hparams["split"], "kather2016")
    assert set(np.bincount(labels[assign(ds, corrected, 16).test])) == {125}  # 20 % of each class
    with pytest.raises(ConfigError, match=r"split\.stratify is read by the schemes"):
        parse(Split, {"scheme": "random_split", "fractions": [0.8, 0.1, 0.1], "stratify": False}, "x")


def test_as_published_fit_protocols_keep_the_last_partial_batch():
    """DataLoader(trainset, batch_size, shuffle=True) in linear.py, end2end_sup.py and supervised.py: drop_last is
    False; the harness's own linear probe is not the code's and keeps its full batches."""
    for variant, expected in (("as_published", "keep"), ("corrected", "drop")):
        plan = planned("breakhis400x", variant)
        kept = {s.protocol: s.hparams["protocol"]["fit"].get("last_batch", "drop") for s in plan.evaluate
                if s.protocol != "knn"}
        assert kept == {"mlp_head": expected, "finetune": expected, "imagenet_frozen": expected,
                        "imagenet_trained": expected, "linear": "drop"}, variant


def test_the_papers_unknown_epochs_and_learning_rates_are_searched():
    """main.py takes --epochs and --lrate per run; the paper's values per dataset are not in the repository."""
    assert {t.path: t.methods for t in STUDY.search_space} == {
        "pretrain.train.epochs": ("simclr", "dclw", "simsiam", "vicreg", "barlow"),
        "pretrain.train.optimizer.lr": ("simclr", "dclw", "simsiam", "vicreg", "barlow")}
    tuned = overrides_of({"pretrain.train.epochs": 150, "pretrain.train.optimizer.lr": 0.03}, "simclr", "mlp_head")

    def train(variant: str) -> dict:
        (pre,) = planned("breakhis400x", variant, methods=["simclr"], protocols=["mlp_head"], overrides=tuned).pretrain
        return pre.hparams["train"]

    assert (train("corrected")["epochs"], train("corrected")["optimizer"]["lr"]) == (150, 0.03)  # tune's default
    assert train("as_published")["epochs"] == 250  # the decision pretrain_epochs pins main.py's default
    (untuned,) = planned("breakhis400x", "corrected", methods=["simclr"], protocols=["mlp_head"]).pretrain
    assert untuned.hparams["train"]["epochs"] == 200  # the README's


def reduced_study(epochs: int = 2):
    """The quick profile, smaller still (a declared profile, so `paper` recognises its runs)."""
    quick = STUDY.profile("quick")
    overrides = deep_merge(quick.overrides, {"pretrain": {"pretrain_subset": 512, "train": {
        "epochs": epochs, "monitor_every": 1}}, "protocols": {"mlp_head": {"protocol": {"fit": {"epochs": 1}}},
                                                               "linear": {"protocol": {"fit": {"epochs": 20}}}}})
    ci = replace(quick, name="ci", overrides=overrides, methods=("simclr", "random_init"),
                 protocols=("knn", "mlp_head", "linear"), variant_seeds={})
    return replace(STUDY, profiles=(*STUDY.profiles, ci))


def test_reduced_quick_replication_end_to_end(tmp_path, medmnist_dir):
    study = reduced_study()
    plan = expand(study, "ci", data_dir=medmnist_dir)
    assert len(plan.pretrain) == 4 and plan.stand_ins == {"kermany_cxr": "pneumoniamnist"}
    store, ctx = cpu_store(tmp_path, medmnist_dir, "medssl.duckdb")
    execute_cleanly(plan, store, ctx)
    assert execute(plan, store, ctx, progress=False).ran == 0  # a second call does no training

    db = store.db_path
    (n_runs,) = run_sql(db, "SELECT count(*) FROM runs WHERE status = 'ok' AND study = 'smalldatassl'")[1][0]
    assert n_runs == len(plan.specs)
    used = run_sql(db, "SELECT DISTINCT dataset, dataset_used, profile FROM runs")[1]
    assert used == [("kermany_cxr", "pneumoniamnist", "ci")]
    curves = run_sql(db, "SELECT count(*) FROM curves c JOIN runs r USING (run_id) WHERE r.kind = 'pretrain' "
                         "AND c.name = 'knn_val_accuracy'")[1][0][0]
    assert curves == 4 * 2
    decisions = run_sql(db, "SELECT DISTINCT name FROM params WHERE kind = 'decision' ORDER BY 1")[1]
    assert [d for (d,) in decisions] == ["crop_scale", "grey_input", "knn_checkpoint", "mlp_head_lr", "partial_batch",
                                         "probe_bn_mode"]
    # the encoder learns and does not collapse (constant features score AUC 0.5 under any probe). This small it
    # does not beat random init under the standardised probe (0.725 vs 0.723); the quick profile shows that (0.91
    # vs 0.73, README)
    auc = dict(run_sql(db, """SELECT method, avg(value) FROM run_metrics WHERE protocol = 'linear'
                              AND split = 'test' AND metric = 'auc' AND decisions LIKE '%grey_input=corrected%'
                              GROUP BY method""")[1])
    assert auc["simclr"] > 0.65, auc
    losses = [v for _, v in run_sql(db, """SELECT c.step, avg(c.value) FROM curves c JOIN runs r USING (run_id)
                                          WHERE r.kind = 'pretrain' AND c.name = 'loss' GROUP BY 1 ORDER BY 1""")[1]]
    assert len(losses) == 2 and losses[1] < losses[0], losses

    out = tmp_path / "paper"
    written = generate(study, db, out, data_dir=medmnist_dir)
    names = {p.name for p in written}
    for expected in ("main_as_published.md", "main_as_published.tex", "main_corrected.md", "decisions.md",
                     "cells.csv", "accuracy.png", "accuracy.pdf", "pretraining_curves.png", "tsne.png"):
        assert expected in names, expected
    main_md = (out / "ci" / "main_as_published.md").read_text()
    assert "kermany_cxr (pneumoniamnist)" in main_md and "(n=2)" in main_md and "SimCLR" in main_md
    assert "100 %" in main_md
    decisions_md = (out / "ci" / "decisions.md").read_text()
    # one 'all corrected' row per (method, protocol) with both sides where several decisions apply (simclr x 3
    # protocols, random init's fine-tuning), and the grey-input row where it is random init's only decision (knn,
    # linear: 'all corrected' is the same runs, shown once)
    assert decisions_md.count("all decisions corrected") == 4 and decisions_md.count("| ci ") == 6
    assert (out / "ci" / "accuracy.png").stat().st_size > 10_000
    check_cells_are_means_of_exactly_their_runs(db, out / "ci" / "cells.csv", expected_cells=24)  # accuracy, AUC


def check_cells_are_means_of_exactly_their_runs(db, cells_csv, expected_cells: int) -> None:
    """Recompute every table cell from the metrics table, run by run, without the code under test."""
    with open(cells_csv) as f:
        cells = list(csv.DictReader(f))
    assert len(cells) == expected_cells
    for cell in cells:
        ids = cell["run_ids"].split()
        rows = run_sql(db, "SELECT r.run_id, r.config_id, r.seed, m.value FROM runs r JOIN metrics m USING (run_id) "
                           "WHERE m.split = 'test' AND m.name = ? AND r.run_id IN (SELECT unnest(?))",
                       [cell["metric"], ids])[1]
        assert len(rows) == len(ids) == int(cell["n"])
        assert {c for _, c, _, _ in rows} == {cell["config_id"]}  # one setting, one code version
        assert len({s for _, _, s, _ in rows}) == len(ids)  # distinct seeds
        values = [v for _, _, _, v in rows]
        assert float(cell["mean"]) == pytest.approx(statistics.fmean(values), abs=1e-12)
        if len(values) > 1:
            assert float(cell["std"]) == pytest.approx(statistics.stdev(values), abs=1e-12)
        # and every run of that config id in the database is in the cell (nothing dropped)
        (n_config,) = run_sql(db, "SELECT count(*) FROM runs WHERE config_id = ? AND status = 'ok'",
                              [cell["config_id"]])[1][0]
        assert n_config == len(ids)


def test_augment_show_writes_a_png(tmp_path, medmnist_dir):
    assert main(["augment", "show", "smalldatassl", "--dataset", "kermany_cxr", "--data-dir", str(medmnist_dir),
                 "--out", str(tmp_path)]) == 0
    assert (tmp_path / "smalldatassl_pneumoniamnist.png").stat().st_size > 5_000
