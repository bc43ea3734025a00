"""Run a plan's pending specs on a Ray cluster (``medssl replicate --executor ray``; the ``cluster`` extra).

One task per spec: a GPU each on CUDA (``num_gpus=1``), else ``cpus_per_task`` CPU slots with as many torch
threads. A spec is submitted once every run it depends on (its pretraining, a starting evaluation) has finished
ok here or was recorded before; one whose dependency failed is recorded as failed without running. Workers only
compute: each returns its RunRecord and the coordinator (this process) writes it as it arrives, so the database
has one writer, and re-running the same command resumes. A worker that dies (killed, out of memory) is recorded
as failed with Ray's error, and the rest of the grid goes on. A worker first fingerprints its own node's code for
the spec: numbers computed by other code than the coordinator planned with would be recorded under the wrong
fingerprint, so a mismatch is a failed run naming the definitions that differ.

Workers write artifacts and checkpoints under the Context's folders: on a cluster of several machines these
must be on a filesystem every node mounts (``--db`` there, or ``--artifacts-dir``).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, replace

import torch

from medssl_core.common.errors import ConfigError
from medssl_core.execute.local import Runner, blocked
from medssl_core.plan.identity import code_fingerprint, differing
from medssl_core.plan.runspec import RunSpec
from medssl_core.run.context import Context
from medssl_core.run.record import failed_record


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("--executor ray needs Ray: pip install 'medssl[cluster]' (or pip install ray).") from exc
    return ray


def code_differences(spec: RunSpec) -> list[str]:
    """The definitions whose code here differs from the fingerprint the coordinator planned ``spec`` with."""
    return differing(spec.code, code_fingerprint(spec.kind, spec.dataset_used, spec.hparams))


def _in_worker(runner: Runner, spec: RunSpec, ctx: Context, threads: int):
    """A spec in a Ray worker: the GPU Ray assigned (cuda:0 of what it sees), or ``threads`` CPU threads; a failed
    record, without running, if this node's medssl computes the spec with other code than the coordinator's."""
    differing = code_differences(spec)
    if differing:
        return failed_record(spec, f"the medssl installed on Ray node {socket.gethostname()} differs from the "
                                   f"coordinator's in {', '.join(differing)}: its numbers would be recorded under "
                                   "code they were not computed with. Install the coordinator's medssl version "
                                   "(the same commit) on that node, then run the same command with --retry-failed.")
    if ctx.device.type == "cuda":
        ctx = replace(ctx, device=torch.device("cuda", 0))
    else:
        torch.set_num_threads(threads)
    return runner(spec, replace(ctx, progress=False))


@dataclass
class RayExecutor:
    """``address``: a running cluster ('auto', 'ray://host:10001', ...); None starts a local Ray with
    ``num_cpus`` CPUs (default: all) and an object store of ``object_store_mb`` (Ray would size it from the
    machine's memory; records are small)."""

    address: str | None = None
    num_cpus: int | None = None
    cpus_per_task: int = 1
    object_store_mb: int = 256

    def _start(self, ray) -> bool:
        if ray.is_initialized():
            return False
        if self.address is None:
            ray.init(num_cpus=self.num_cpus, object_store_memory=self.object_store_mb * 2**20,
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=self.address, log_to_driver=False, configure_logging=False)
        return True

    def _check(self, ray, ctx: Context) -> dict:
        """Refuse what Ray would wait for forever: a GPU task on a cluster without GPUs, more CPUs than it has."""
        have = ray.cluster_resources()
        if ctx.device.type == "cuda":
            if have.get("GPU", 0) < 1:
                raise ConfigError(f"the runs are for CUDA but the Ray cluster declares no GPU ({have}); Ray would wait "
                                  "for one forever. Start the nodes with GPUs (ray start --num-gpus N) or use "
                                  "--device cpu.")
            return {"num_gpus": 1, "num_cpus": 0}
        if have.get("CPU", 0) < self.cpus_per_task:
            raise ConfigError(f"each run asks for {self.cpus_per_task} CPUs but the Ray cluster has "
                              f"{have.get('CPU', 0):g}; lower --cpus-per-task.")
        return {"num_gpus": 0, "num_cpus": self.cpus_per_task}

    def run(self, todo, ctx, runner, failed, finish) -> None:
        ray = _import_ray()
        started = self._start(ray)
        try:
            task = ray.remote(_in_worker).options(max_retries=0, **self._check(ray, ctx))
            waiting = list(todo)
            todo_ids = {s.run_id for s in todo}
            finished_ok: set[str] = set()
            in_flight: dict = {}
            while waiting or in_flight:
                before = len(waiting)
                for spec in list(waiting):
                    record = blocked(spec, failed)
                    if record is not None:
                        waiting.remove(spec)
                        finish(spec, record)
                    elif all(d in finished_ok or d not in todo_ids for d in spec.depends_on):
                        waiting.remove(spec)
                        in_flight[task.remote(runner, spec, ctx, self.cpus_per_task)] = spec
                if not in_flight:
                    if len(waiting) == before:
                        raise RuntimeError(f"runs wait on runs that never finish: {[s.run_id for s in waiting]}")
                    continue  # the loop above recorded the blocked ones; what waits on them is blocked next
                done, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in done:
                    spec = in_flight.pop(ref)
                    try:
                        record = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        record = failed_record(spec, f"its Ray worker failed: {type(exc).__name__}: "
                                                     f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
                    finish(spec, record)
                    if record.ok:
                        finished_ok.add(spec.run_id)
        finally:
            if started:
                ray.shutdown()
