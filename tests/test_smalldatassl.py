"""SmallDataSSL: the declaration, and a reduced quick replication end to end on the real PneumoniaMNIST."""

from __future__ import annotations

import csv

from medssl_core.cli import main
from medssl_core.execute import execute
from medssl_core.grid import expand
from medssl_core.paper import generate
from medssl_core.runner import Context
from medssl_core.store import ResultsStore, run_sql
from medssl_core.study import get_study

STUDY = get_study("smalldatassl")


def test_declaration_matches_the_code_facts(medmnist_dir):
    plan = expand(STUDY, "paper", data_dir=medmnist_dir)  # plans the 224 px download, does not start it
    pre = {(s.method, s.decisions.get("crop_scale"), s.seed) for s in plan.pretrain}
    assert {m for m, _, _ in pre} == {"simclr", "dclw", "simsiam", "vicreg", "barlow"}
    simclr = next(s for s in plan.pretrain if s.method == "simclr" and set(s.decisions.values()) == {"as_published"})
    hp = simclr.hparams
    assert hp["backbone"]["arch"] == "resnet50" and hp["image_size"] == 224 and simclr.dataset_used == "pneumoniamnist"
    assert hp["augment"]["crop_scale"] == [0.08, 0.1] and hp["train"]["optimizer"] == {"name": "sgd", "lr": 0.01,
                                                                                          "momentum": 0.0}
    assert hp["train"]["epochs"] == 200 and hp["train"]["batch_size"] == 64 and hp["train"]["knn_k"] == 200
    assert hp["method"]["loss_kwargs"] == {"temperature": 0.5} and hp["method"]["projector"] == [512, 128]
    dclw = next(s for s in plan.pretrain if s.method == "dclw" and s.decisions["dclw_symmetric"] == "as_published")
    assert dclw.hparams["method"]["loss_kwargs"] == {"temperature": 0.1, "sigma": 0.5, "symmetric": False}
    simsiam = [s for s in plan.pretrain if s.method == "simsiam"]
    assert {str(s.hparams["method"]["predictor"]) for s in simsiam} == {"None", "[128, 512]"}
    mlp = next(s for s in plan.evaluate if s.protocol == "mlp_head" and s.decisions["mlp_head_lr"] == "as_published")
    assert mlp.hparams["protocol"]["fit"]["optimizer"]["lr"] == 1.0 and mlp.hparams["protocol"]["backbone_bn_train"]
    # PneumoniaMNIST ships official splits: the split-seeding decision is moot there and not recorded
    assert all("split_seed" not in s.decisions for s in plan.specs)
    # per seed: as published, each pretraining flip that applies, all corrected; evaluation-only flips share
    # the as-published pretraining: simclr/vicreg/barlow 4, dclw/simsiam 5
    assert len(plan.pretrain) == 3 * (4 + 5 + 5 + 4 + 4)
    assert any("imagenet" in what for what, _ in plan.skipped)


def test_reduced_quick_replication_end_to_end(tmp_path, medmnist_dir):
    overrides = {"pretrain": {"pretrain_subset": 256, "train": {"epochs": 2, "monitor_every": 1}}}
    plan = expand(STUDY, "quick", data_dir=medmnist_dir, seeds=[0, 1], methods=["simclr", "random_init"],
                  protocols=["knn", "mlp_head", "linear"], overrides=overrides)
    assert len(plan.pretrain) == 4  # 2 seeds x (as published, corrected)
    store = ResultsStore(tmp_path / "medssl.duckdb")
    ctx = Context(str(medmnist_dir), __import__("torch").device("cpu"), store.artifacts_dir, store.checkpoints_dir,
                  progress=False)
    summary = execute(plan, store, ctx, progress=False)
    assert not summary.failed, [r.run["error"] for r in summary.failed]
    assert execute(plan, store, ctx, progress=False).ran == 0  # a second call does no training

    db = store.db_path
    (n_runs,) = run_sql(db, "SELECT count(*) FROM runs WHERE status = 'ok' AND study = 'smalldatassl'")[1][0]
    assert n_runs == len(plan.specs)
    rows = run_sql(db, """SELECT method, protocol, n, mean FROM metric_summary WHERE split = 'test'
                          AND metric = 'accuracy' AND decisions LIKE '%crop_scale=as_published%' ORDER BY ALL""")[1]
    assert {(m, p) for m, p, _, _ in rows} == {("simclr", "knn"), ("simclr", "mlp_head"), ("simclr", "linear")}
    assert all(n == 2 and 0.3 < mean <= 1.0 for _, _, n, mean in rows)
    used = run_sql(db, "SELECT DISTINCT dataset, dataset_used, profile FROM runs")[1]
    assert used == [("kermany_cxr", "pneumoniamnist", "quick")]
    curves = run_sql(db, "SELECT count(*) FROM curves c JOIN runs r USING (run_id) WHERE r.kind = 'pretrain' "
                         "AND c.name = 'knn_val_acc'")[1][0][0]
    assert curves == 4 * 2
    decisions = run_sql(db, "SELECT DISTINCT name FROM params WHERE kind = 'decision' ORDER BY 1")[1]
    assert [d for (d,) in decisions] == ["crop_scale", "knn_checkpoint", "mlp_head_lr", "probe_bn_mode",
                                         "sgd_momentum"]

    out = tmp_path / "paper"
    written = generate(STUDY, db, out, data_dir=medmnist_dir)
    names = {p.name for p in written}
    for expected in ("main_as_published.md", "main_as_published.tex", "main_corrected.md", "decisions.md",
                     "cells.csv", "accuracy.png", "accuracy.pdf", "pretraining_curves.png", "tsne.png"):
        assert expected in names, expected
    main_md = (out / "main_as_published.md").read_text()
    assert "kermany_cxr (pneumoniamnist)" in main_md and "(n=2)" in main_md and "SimCLR" in main_md
    decisions_md = (out / "decisions.md").read_text()
    assert "RandomResizedCrop scale" not in decisions_md or "[0.08, 0.1] → [0.08, 1.0]" in decisions_md
    assert "all decisions corrected" in decisions_md
    with open(out / "cells.csv") as f:
        cells = list(csv.DictReader(f))
    known = {r[0] for r in run_sql(db, "SELECT run_id FROM runs")[1]}
    assert cells and all(set(c["run_ids"].split()) <= known and int(c["n"]) == len(c["run_ids"].split())
                         for c in cells)
    assert (out / "accuracy.png").stat().st_size > 10_000


def test_augment_show_writes_a_png(tmp_path, medmnist_dir):
    assert main(["augment", "show", "smalldatassl", "--dataset", "kermany_cxr", "--data-dir", str(medmnist_dir),
                 "--out", str(tmp_path)]) == 0
    assert (tmp_path / "smalldatassl_pneumoniamnist.png").stat().st_size > 5_000
