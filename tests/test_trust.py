"""Results you can trust: identity covers code and data, strict configs, tables that never pool, a dry run
that writes nothing, a rebuild that survives bad records, paper robustness."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from medssl_core import config
from medssl_core.api import query
from medssl_core.cli import main
from medssl_core.common.errors import ConfigError
from medssl_core.paper.generate import generate
from medssl_core.paper.labels import format_fraction
from medssl_core.plan import identity
from medssl_core.plan.catalog import get_study
from medssl_core.plan.grid import expand
from medssl_core.plan.runspec import _without, canonical_json
from medssl_core.plan.study import Decision
from medssl_core.store import run_sql

DEMO = get_study("demo")
FAST = ["--methods", "random_init", "--protocols", "knn", "--seeds", "0", "--device", "cpu", "--no-progress"]


def replicate(tmp_path: Path, data_dir: Path, *extra: str) -> int:
    return main(["replicate", "demo", "--db", str(tmp_path / "r.duckdb"), "--data-dir", str(data_dir), *FAST,
                 *extra])


def test_every_module_is_classified_numeric_or_not():
    modules = {str(p.relative_to(identity.PACKAGE)) for p in identity.PACKAGE.rglob("*.py")}
    numeric = {m for mods in (*identity.NUMERIC.values(), *identity.BY_SOURCE_KIND.values(), identity.BY_DEFINITION,
                              *(mods for _, _, mods in identity.BY_SETTING)) for m in mods}
    for module in modules:  # each in exactly one class
        assert identity.listed(module, numeric) != identity.listed(module, identity.NOT_NUMERIC), module
    assert not {m for m in (*numeric, *identity.NOT_NUMERIC) if not m.endswith("/")} - modules  # no stale entry
    assert "evaluate/metrics.py" not in identity.NUMERIC["pretrain"]  # a metrics fix does not re-run pretrainings
    assert "nt_xent" not in identity.code_fingerprint("evaluate", "breastmnist", {"protocol": {"kind": "fit"}})


def test_misspelt_decision_param_fails_at_plan_time(medmnist_dir):
    bad = replace(DEMO, decisions=(Decision("momentum", "typo", "train.optimizer.momentun", 0.0, 0.9,
                                            stage="pretrain"),))
    with pytest.raises(ConfigError) as err:
        expand(bad, "quick", data_dir=medmnist_dir)
    assert "'train.optimizer.momentun' is not a field" in str(err.value) and "momentum" in str(err.value)
    bad_loss = replace(DEMO, decisions=(Decision("t", "typo", "method.loss_kwargs.temperatur", 0.5, 0.1,
                                                 stage="pretrain"),))
    with pytest.raises(ConfigError, match="temperatur"):
        expand(bad_loss, "quick", data_dir=medmnist_dir)


def test_unknown_keys_anywhere_are_config_errors(medmnist_dir):
    with pytest.raises(ConfigError) as err:
        expand(DEMO, "quick", data_dir=medmnist_dir, overrides={"pretrain": {"train": {"epochz": 1}}})
    assert "train.epochz" in str(err.value) and "valid keys here" in str(err.value) and "epochs" in str(err.value)
    with pytest.raises(ConfigError, match="tempreature"):
        expand(DEMO, "quick", data_dir=medmnist_dir,
               overrides={"pretrain": {"method": {"loss_kwargs": {"tempreature": 0.1}}}})
    with pytest.raises(ConfigError, match=r"protocol.knn.fit: unknown key .* valid keys here: k, kind, metric"):
        expand(DEMO, "quick", data_dir=medmnist_dir, overrides={"evaluate": {"protocol": {"fit": {"epochs": 1}}}})
    with pytest.raises(ConfigError, match=r"protocol.fit.fit.optimizer.name: Input should be 'sgd'"):
        expand(DEMO, "quick", data_dir=medmnist_dir, protocols=["linear"],
               overrides={"evaluate": {"protocol": {"fit": {"optimizer": {"name": "adamm"}}}}})
    with pytest.raises(ConfigError, match="unknown method"):
        replace(DEMO, decisions=(replace(DEMO.decisions[0], methods=("simclrr",)),))


def test_dry_run_writes_nothing(tmp_path, medmnist_dir, capsys):
    results = tmp_path / "results"
    assert main(["replicate", "demo", "--db", str(results / "r.duckdb"), "--data-dir", str(medmnist_dir),
                 "--dry-run", "--seeds", "0", "--methods", "simclr"]) == 0
    assert not results.exists()  # no database, no lock, no record folder, no reported rows
    out = capsys.readouterr().out
    assert out.count("  pretrain ") == 1 and out.count("  evaluate ") == 2 and out.count("as published") == 3


def test_stale_code_is_rerun_and_left_out_of_tables(tmp_path, medmnist_dir, monkeypatch, capsys):
    assert replicate(tmp_path, medmnist_dir) == 0
    db = tmp_path / "r.duckdb"
    (first,) = run_sql(db, "SELECT run_id FROM runs")[1][0]
    real = identity.code_fingerprint

    def changed(kind, dataset_used, hparams=None):  # as if metrics.py's classification_metrics had been edited
        fp = dict(real(kind, dataset_used, hparams))
        if "classification_metrics" in fp:
            fp["classification_metrics"] = "000000000000"
        return fp

    monkeypatch.setattr(identity, "code_fingerprint", changed)
    monkeypatch.setattr("medssl_core.plan.grid.code_fingerprint", changed)
    rows = dict((r[0], r[1:]) for r in query(db, "SELECT run_id, stale, why FROM run_staleness")[1])
    assert rows[first] == (True, "code changed: classification_metrics")
    capsys.readouterr()
    assert replicate(tmp_path, medmnist_dir, "--dry-run") == 0
    assert "1 runs are stale and run again (code changed: classification_metrics (1))" in capsys.readouterr().err
    assert replicate(tmp_path, medmnist_dir, "--reuse-stale") == 0
    assert "1 stale runs kept" in capsys.readouterr().err
    assert run_sql(db, "SELECT count(*) FROM runs")[1] == [(1,)]  # kept, not re-run
    assert run_sql(db, "SELECT run_id FROM reused")[1] == [(first,)]
    written = generate(DEMO, db, tmp_path / "paper")
    assert "kept stale" in (tmp_path / "paper" / "quick" / "main_as_published.md").read_text()
    assert replicate(tmp_path, medmnist_dir) == 0  # without --reuse-stale: a stale run is run again
    ids = [r for (r,) in run_sql(db, "SELECT run_id FROM runs ORDER BY finished_at")[1]]
    assert len(ids) == 2 and ids[0] == first
    assert written


def test_changed_data_makes_runs_stale_and_is_verified_on_load(tmp_path, medmnist_dir, capsys):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(medmnist_dir / "breastmnist.npz", data / "breastmnist.npz")
    assert replicate(tmp_path, data) == 0
    shutil.copy(medmnist_dir / "pneumoniamnist.npz", data / "breastmnist.npz")  # other bytes, same name
    capsys.readouterr()
    assert replicate(tmp_path, data) == 1
    err = capsys.readouterr().err
    assert "1 runs are stale and run again (data changed: breastmnist (1))" in err
    (error,) = run_sql(tmp_path / "r.duckdb", "SELECT error FROM runs WHERE status = 'failed'")[1][0]
    assert "does not match the official breastmnist" in error and "medssl data fetch breastmnist" in error


def test_edited_study_gets_new_config_ids_and_old_runs_are_left_out(tmp_path, medmnist_dir):
    assert main(["replicate", "demo", "--db", str(tmp_path / "r.duckdb"), "--data-dir", str(medmnist_dir),
                 "--methods", "random_init", "--seeds", "0,1", "--device", "cpu", "--no-progress"]) == 0
    db = tmp_path / "r.duckdb"
    linear = next(p for p in DEMO.protocols if p.name == "linear")
    edited = replace(DEMO, protocols=(DEMO.protocols[0], replace(linear, hparams={
        **linear.hparams, "fit": {**linear.hparams["fit"], "epochs": 6}})))
    old = {s.config_id for s in expand(DEMO, "quick", data_dir=medmnist_dir).specs if s.protocol == "linear"}
    new = {s.config_id for s in expand(edited, "quick", data_dir=medmnist_dir).specs if s.protocol == "linear"}
    assert old and new and not old & new
    generate(edited, db, tmp_path / "paper", tsne=False)
    table = (tmp_path / "paper" / "quick" / "main_as_published.md").read_text()
    assert "kNN" in table and "Linear probe" not in table
    assert "settings no longer declared by the study: 2 runs" in (tmp_path / "paper" / "README.md").read_text()


def test_paper_errors_and_fraction_labels(tmp_path, capsys):
    assert main(["paper", "demo", "--db", str(tmp_path / "none.duckdb")]) == 2
    assert "No results database" in capsys.readouterr().err
    from medssl_core.store import ResultsStore

    ResultsStore(tmp_path / "empty.duckdb").init()
    assert main(["paper", "demo", "--db", str(tmp_path / "empty.duckdb")]) == 2
    assert "holds no finished runs of demo" in capsys.readouterr().err
    assert main(["paper", "--db", str(tmp_path / "empty.duckdb")]) == 2
    assert [format_fraction(f) for f in (0.005, 0.01, 0.1, 0.125, 1.0, None)] == [
        "0.5 %", "1 %", "10 %", "12.5 %", "100 %", "100 %"]


def test_rebuild_skips_unreadable_records_and_says_so(tmp_path, medmnist_dir, capsys):
    assert replicate(tmp_path, medmnist_dir) == 0
    records = tmp_path / "r_runs" / "records"
    bad = records / "0000broken.json"
    bad.write_text("{not json")
    capsys.readouterr()
    assert main(["results", "rebuild", "--db", str(tmp_path / "r.duckdb")]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "1 record file(s) could not be read" in err
    assert run_sql(tmp_path / "r.duckdb", "SELECT count(*) FROM runs")[1] == [(1,)]


def test_studies_and_study_show(capsys):
    assert main(["studies"]) == 0
    out = capsys.readouterr().out
    assert "smalldatassl" in out and "demo" in out
    assert main(["study", "show", "smalldatassl"]) == 0
    out = capsys.readouterr().out
    assert "crop_scale" in out and "[0.08, 0.1] -> [0.08, 1.0]" in out and "quick" in out
    assert "pneumoniamnist" in out and "Reported numbers" in out


# an option added to the configuration after runs were recorded, and what runs did before it existed
ADDED_LATER = {("Data", "label_order"): None, ("Split", "per_part"): False,
               ("Split", "label_fraction"): "stratified", ("FitLoss", "double_softmax"): False,
               ("Fit", "last_batch"): "drop", ("Fit", "scored"): "selected", ("Fit", "select_ties"): "later",
               ("Backbone", "random_init"): "torchvision", ("Backbone", "zero_init_residual"): True,
               ("Fit", "val_limit"): None, ("Fit", "score_on"): "test", ("Split", "patient_fraction"): None,
               ("EvaluateHP", "start_from"): None, ("SSLMethod", "projector_hidden_bn"): True,
               ("FitProtocol", "gradcam"): 0, ("FitProtocol", "embedding"): "none",
               ("Data", "masks"): "none", ("Schedule", "plateau_patience"): 10, ("Head", "hidden_bn"): True,
               ("Head", "input_norm"): "none", ("Fit", "thresholds_on"): "val",
               ("Backbone", "shared_attention"): False, ("Data", "mask_channel"): False,
               ("Split", "train_patients"): None, ("PretrainHP", "extra_images"): None,
               ("Data", "crop_to_lungs"): False, ("Backbone", "out_dim"): None, ("Backbone", "grey_weights"): "sum",
               ("Split", "val_labels"): "all", ("Split", "distinct_roles"): False,
               ("AnatomyOptions", "mask_both_views"): False, ("Split", "stratify"): True,
               ("Backbone", "stand_in_weights"): False, ("Train", "capture"): "off"}


def _strict_models(cls=config.Strict):
    for sub in cls.__subclasses__():
        yield sub
        yield from _strict_models(sub)
    if cls is config.Strict:  # and the methods' own options (a method's 'options' section of the config)
        from medssl_core.methods import METHODS

        yield from {m.Options for m in METHODS.values()}


def test_options_added_later_leave_the_specs_of_other_studies_as_they_were(medmnist_dir):
    declared = {(m.__name__, name): info.json_schema_extra["absent"]
                for m in _strict_models() for name, info in m.model_fields.items()
                if name in m.__annotations__ and isinstance(info.json_schema_extra, dict)
                and "absent" in info.json_schema_extra}
    assert declared == ADDED_LATER  # an 'absent' value never changes: it is what recorded runs did
    assert "per_part" not in config.spec_form(config.Split(scheme="official"))
    assert config.spec_form(config.Split(scheme="official", per_part=True))["per_part"] is True
    plan = expand(get_study("smalldatassl"), "quick", data_dir=medmnist_dir)
    for spec in plan.specs:  # no added option as a key, but the one the study declares (its standardised probe)
        declared_here = {"input_norm"} if spec.protocol == "linear" else {"last_batch"} if spec.decisions.get(
            "partial_batch") == "as_published" else set()
        text = canonical_json(_without(spec.to_dict(), ("code",)))  # the settings (code keys are definitions' names)
        assert not any(f'"{name}":' in text for _, name in ADDED_LATER if name not in declared_here), spec.label()
        assert '"start":' not in text  # RunSpec.start, unset


def test_a_sources_reader_counts_only_for_the_runs_that_read_that_source():
    assert "data/medimeta.py" in identity.numeric_modules("evaluate", "mimeta_crc")
    assert "data/medimeta.py" in identity.numeric_modules("pretrain", "mimeta_organs_axial+mimeta_organs_coronal")
    assert "data/medimeta.py" not in identity.numeric_modules("pretrain", "breastmnist")
    mimeta, plain = (identity.code_fingerprint("evaluate", name) for name in ("mimeta_crc", "breastmnist"))
    assert {"split_indices", "read_labels"} <= set(mimeta) and not {"split_indices", "read_labels"} & set(plain)
    assert identity.code_changes({**mimeta, "split_indices": "0" * 12}, "evaluate", "mimeta_crc") == ["split_indices"]
    assert mimeta["read_images"] != plain["read_images"]  # sources.py's and medimeta.py's: both count for MedIMeta


def test_optional_analyses_count_only_for_the_runs_that_use_them():
    plain = {"protocol": {"kind": "fit"}}
    cams = {"protocol": {"kind": "fit", "gradcam": 8}}
    assert "evaluate/gradcam.py" not in identity.numeric_modules("evaluate", "breastmnist", plain)
    assert {"evaluate/gradcam.py", "data/lung_mask.py"} <= set(identity.numeric_modules("evaluate", "breastmnist",
                                                                                         cams))
    stand_in = {**plain, "backbone": {"arch": "resnet18", "init": "imagenet", "stand_in_weights": True}}
    assert "models/stand_in.py" in identity.numeric_modules("evaluate", "breastmnist", stand_in)
    assert "models/stand_in.py" not in identity.numeric_modules("pretrain", "breastmnist", {})
    assert "data/lung_mask.py" in identity.numeric_modules("pretrain", "breastmnist", {"masks": "lung_rule"})
    assert "data/lung_mask.py" not in identity.numeric_modules("pretrain", "breastmnist", {})
    pathology = identity.numeric_modules("evaluate", "breastmnist", {**plain, "masks": "pathology_rule"})
    assert "data/pathology_mask.py" in pathology and "data/lung_mask.py" not in pathology  # whole: not needed
    # ... but the lung mask's kernel scaling, which the pathology mask calls, counts (tests/test_identity.py)
    assert "scaled_kernel" in identity.code_fingerprint("evaluate", "breastmnist", {**plain, "masks": "pathology_rule"})
    assert "data/lung_mask.py" in identity.numeric_modules("evaluate", "breastmnist", {**plain, "crop_to_lungs": True})
    edited = {**identity.code_fingerprint("evaluate", "breastmnist", cams), "grad_cams": "0" * 12}
    assert identity.code_changes(edited, "evaluate", "breastmnist", cams) == ["grad_cams"]  # stale
    assert "grad_cams" not in identity.code_fingerprint("evaluate", "breastmnist", plain)  # others: untouched


def test_profile_overrides_refuse_unknown_sections_and_names(medmnist_dir):
    study = get_study("smalldatassl")
    quick = study.profile("quick")

    def plan(overrides):
        profile = replace(quick, name="x", overrides=overrides)
        return expand(replace(study, profiles=(*study.profiles, profile)), "x", data_dir=medmnist_dir,
                      datasets=["kermany_cxr"], variant_names=["corrected"], seeds=[0])

    with pytest.raises(ConfigError, match=r"unknown \['protocol'\]; valid sections: pretrain"):
        plan({**quick.overrides, "protocol": {"linear": {}}})  # 'protocols' misspelt: once silently ignored
    with pytest.raises(ConfigError, match="nosuch"):
        plan({**quick.overrides, "protocols": {"nosuch": {}}})
    with pytest.raises(ConfigError, match="simsiem"):
        plan({**quick.overrides, "methods": {"simsiem": {}}})
    with pytest.raises(ConfigError, match=r"methods\.simclr\.projector.*each with pretrain, evaluate, protocols"):
        plan({**quick.overrides, "methods": {"simclr": {"projector": [64, 32]}}})  # the stage is missing
    assert plan(quick.overrides).pretrain  # the study's own overrides pass
    # a method's own section reaches that method's runs only, the pretraining and its evaluations
    scoped = plan({**quick.overrides, "methods": {"dclw": {"pretrain": {"pretrain_subset": 1000},
                                                              "protocols": {"linear": {"protocol": {"fit": {
                                                                  "epochs": 3}}}}}}})
    subsets = {s.method: s.hparams["pretrain_subset"] for s in scoped.pretrain}
    assert subsets.pop("dclw") == 1000 and set(subsets.values()) == {quick.overrides["pretrain"]["pretrain_subset"]}
    epochs = {(s.method, s.hparams["protocol"]["fit"]["epochs"]) for s in scoped.specs if s.protocol == "linear"}
    assert ("dclw", 3) in epochs and ("dclw", 30) not in epochs and ("simclr", 30) in epochs
