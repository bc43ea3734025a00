"""The Ray executor on a local 2-CPU Ray: the demo study gives exactly the local executor's records, a worker that
dies is recorded as failed while the grid goes on, and a GPU plan on a cluster without GPUs is refused."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch

from medssl_core.common.errors import ConfigError
from medssl_core.execute.local import execute
from medssl_core.plan.catalog import get_study
from medssl_core.plan.grid import expand
from medssl_core.run.context import Context
from medssl_core.run.runner import execute_spec
from medssl_core.store import run_sql
from tests.conftest import cpu_store

ray = pytest.importorskip("ray", reason="the cluster extra (pip install 'medssl[cluster]') brings Ray")
from medssl_core.execute.ray_cluster import RayExecutor  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, object_store_memory=128 * 2**20, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


def _results(db):
    return run_sql(db, "SELECT r.run_id, r.status, m.split, m.name, m.value FROM runs r JOIN metrics m USING (run_id) "
                       "ORDER BY 1, 3, 4")[1]


def test_ray_gives_the_local_executors_records(tmp_path, medmnist_dir, local_ray):
    plan = expand(get_study("demo"), "quick", data_dir=medmnist_dir, seeds=[0])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a Ray task has one CPU and one thread: the same arithmetic here
    try:
        local, ctx = cpu_store(tmp_path, medmnist_dir, "local.duckdb")
        execute(plan, local, ctx, progress=False)
    finally:
        torch.set_num_threads(threads)
    on_ray, ctx = cpu_store(tmp_path / "ray", medmnist_dir)
    summary = execute(plan, on_ray, ctx, progress=False, executor=RayExecutor())
    assert summary.ran == len(plan.specs) == 5 and not summary.failed
    assert _results(on_ray.db_path) == _results(local.db_path) and len(_results(local.db_path)) > 10
    assert execute(plan, on_ray, ctx, progress=False, executor=RayExecutor()).ran == 0  # resumes: nothing left


def test_a_killed_worker_is_recorded_as_failed_and_the_grid_goes_on(tmp_path, medmnist_dir, local_ray):
    plan = expand(get_study("demo"), "quick", data_dir=medmnist_dir, seeds=[0])
    pretrain = next(s for s in plan.specs if s.kind == "pretrain")

    def dies_on_the_pretraining(spec, ctx):  # pickled by value into the worker
        if spec.run_id == pretrain.run_id:
            os._exit(1)  # the worker process dies, as on a kill or an out-of-memory
        return execute_spec(spec, ctx)

    store, ctx = cpu_store(tmp_path, medmnist_dir)
    summary = execute(plan, store, ctx, progress=False, runner=dies_on_the_pretraining, executor=RayExecutor())
    errors = {r.run["run_id"]: r.run["error"] for r in summary.failed}
    assert "Ray worker failed" in errors[pretrain.run_id]
    dependents = [s.run_id for s in plan.specs if pretrain.run_id in s.depends_on]
    assert dependents and all(f"pretraining run {pretrain.run_id} failed" in errors[d] for d in dependents)
    statuses = dict(run_sql(store.db_path, "SELECT run_id, status FROM runs")[1])
    assert len(statuses) == 5 and list(statuses.values()).count("ok") == 5 - 1 - len(dependents) > 0


def test_gpu_runs_on_a_cluster_without_gpus_are_refused(local_ray, tmp_path):
    ctx = Context(None, torch.device("cuda"), tmp_path, tmp_path, progress=False)
    with pytest.raises(ConfigError, match="declares no GPU"):
        RayExecutor().run([object()], ctx, execute_spec, set(), lambda *a: None)
    with pytest.raises(ConfigError, match="cpus-per-task"):
        RayExecutor(cpus_per_task=3).run([object()], replace(ctx, device=torch.device("cpu")), execute_spec, set(),
                                         lambda *a: None)
