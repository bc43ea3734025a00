"""DuckDB schema of the results store. Every table but `reported` and `bench` is keyed by run_id."""

TABLES = {
    "runs": """
        run_id VARCHAR PRIMARY KEY, config_id VARCHAR, kind VARCHAR NOT NULL, study VARCHAR NOT NULL,
        dataset VARCHAR, dataset_used VARCHAR, method VARCHAR, protocol VARCHAR, fraction DOUBLE, seed INTEGER,
        profile VARCHAR, decisions VARCHAR, parent_run_id VARCHAR, code_version VARCHAR, data_version VARCHAR,
        pretrain_dataset VARCHAR, status VARCHAR NOT NULL, error VARCHAR,
        started_at TIMESTAMP, finished_at TIMESTAMP, wall_s DOUBLE, peak_mem_mb DOUBLE, device VARCHAR,
        spec_json VARCHAR NOT NULL""",
    "params": "run_id VARCHAR NOT NULL, kind VARCHAR NOT NULL, name VARCHAR NOT NULL, value VARCHAR",
    "metrics": "run_id VARCHAR NOT NULL, split VARCHAR NOT NULL, name VARCHAR NOT NULL, value DOUBLE",
    "curves": "run_id VARCHAR NOT NULL, step INTEGER NOT NULL, name VARCHAR NOT NULL, value DOUBLE",
    "environment": """
        run_id VARCHAR PRIMARY KEY, git_commit VARCHAR, git_dirty BOOLEAN, python VARCHAR, platform VARCHAR,
        hostname VARCHAR, torch VARCHAR, torchvision VARCHAR, cuda VARCHAR, cudnn VARCHAR, device_name VARCHAR,
        threads INTEGER, deterministic BOOLEAN, packages VARCHAR, data_checksums VARCHAR""",
    "artifacts": "run_id VARCHAR NOT NULL, name VARCHAR NOT NULL, path VARCHAR, sha256 VARCHAR, bytes BIGINT",
    "reported": """
        study VARCHAR NOT NULL, dataset VARCHAR, method VARCHAR, protocol VARCHAR, fraction DOUBLE,
        metric VARCHAR, value DOUBLE, source VARCHAR NOT NULL, note VARCHAR, backed_by_runs BOOLEAN""",
    # runs kept although their code or data changed, because `replicate --reuse-stale` was asked
    "reused": "run_id VARCHAR PRIMARY KEY, study VARCHAR NOT NULL, reason VARCHAR, reused_at TIMESTAMP",
    # `medssl bench`: pretraining throughput of one pipeline on one case, with the machine it ran on
    "bench": """
        measured_at TIMESTAMP NOT NULL, grid VARCHAR, arch VARCHAR, size INTEGER, method VARCHAR, batch INTEGER,
        pipeline VARCHAR NOT NULL, pairs_per_s DOUBLE, peak_mem_mb DOUBLE, steps INTEGER, repeats INTEGER,
        workers INTEGER, device VARCHAR, bf16 BOOLEAN, channels_last BOOLEAN, threads INTEGER, git_commit VARCHAR,
        environment VARCHAR, tflops DOUBLE, peak_tflops DOUBLE, capture VARCHAR""",
    # `medssl tune`: each Optuna trial, the evaluation run it scored and its validation value
    "trials": """
        optuna_study VARCHAR NOT NULL, trial INTEGER NOT NULL, run_id VARCHAR, params VARCHAR, objective VARCHAR,
        value DOUBLE, finished_at TIMESTAMP""",
}
# Tables written by appending rows (not from the record files): their columns in order, for store.append
APPENDED = {name: tuple(col.split()[0] for col in TABLES[name].split(",")) for name in ("bench", "trials")}

# Columns added since the first release: added in place to an older database.
ADDED_COLUMNS = {"runs": ("config_id VARCHAR", "code_version VARCHAR", "data_version VARCHAR",
                         "pretrain_dataset VARCHAR"),
                 "reported": ("backed_by_runs BOOLEAN",),  # false: a number the source typed in, not computed
                 # TFLOP/s achieved, the device's measured matrix-product peak, the pipeline's train.capture
                 "bench": ("tflops DOUBLE", "peak_tflops DOUBLE", "capture VARCHAR")}

RUN_TABLES = ("runs", "params", "metrics", "curves", "environment", "artifacts")

VIEWS = {
    # One row per (finished run, metric): the table most queries start from.
    "run_metrics": """
        SELECT r.run_id, r.config_id, r.kind, r.study, r.dataset, r.dataset_used, r.pretrain_dataset, r.method,
               r.protocol, r.fraction, r.seed, r.profile, r.decisions, r.code_version, r.data_version, m.split,
               m.name AS metric, m.value
        FROM runs r JOIN metrics m USING (run_id) WHERE r.status = 'ok'""",
    # Mean and spread over the seeds of one config id (same settings, code and data), with the run ids behind
    # every number; the other columns are determined by the config id and shown for reading.
    "metric_summary": """
        SELECT config_id, study, dataset, dataset_used, pretrain_dataset, method, protocol, fraction, profile,
               decisions, code_version, data_version, split, metric, count(*) AS n, avg(value) AS mean,
               stddev_samp(value) AS std, list(seed ORDER BY seed) AS seeds, list(run_id ORDER BY run_id) AS run_ids
        FROM run_metrics WHERE config_id IS NOT NULL GROUP BY ALL""",
    "reported_vs_reproduced": """
        SELECT s.*, rep.value AS reported, s.mean - rep.value AS diff, rep.source AS reported_source,
               rep.backed_by_runs AS reported_backed_by_runs
        FROM metric_summary s LEFT JOIN reported rep
          ON rep.study = s.study AND rep.dataset = s.dataset AND rep.method = s.method
         AND rep.protocol = s.protocol AND rep.metric = s.metric AND s.split = 'test'
         AND coalesce(rep.fraction, 1.0) = coalesce(s.fraction, 1.0)""",
}


def create_statements() -> list[str]:
    stmts = [f"CREATE TABLE IF NOT EXISTS {name} ({cols})" for name, cols in TABLES.items()]
    stmts += [f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {c}" for t, cols in ADDED_COLUMNS.items() for c in cols]
    stmts += [f"CREATE OR REPLACE VIEW {name} AS {sql}" for name, sql in VIEWS.items()]
    return stmts
