from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest
import torch

import medssl_core  # noqa: F401  (first: makes torchvision importable over a CPU torch)

# CI has 2 cores: one pytest process with 2 torch threads, or (``-n 2``, the default of ``nox -s tests``) two
# xdist workers with one each, whose Python-bound parts (stores, tables, figures) then run side by side
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
ROOT = Path(__file__).resolve().parent.parent
SHARED_MEDMNIST = ROOT.parent / "shared" / "data" / "medmnist"


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip where torch sees no CUDA device (CI); their CPU twins run there."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False): benchmarks/gpu_check.py")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture
def dynamo_without_inductor(monkeypatch):
    """torch.compile through dynamo's eager backend: what dynamo traces, guards and recompiles is tested in seconds,
    without inductor's code generation (20-80 s a model on these cores; tests/test_capture.py tests that once)."""
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None: compile_(fn, backend="eager"))


@pytest.fixture(scope="session")
def medmnist_dir() -> Path:
    """The real, official MedMNIST files beside the checkout. Missing means a broken setup: fail, never skip."""
    if not (SHARED_MEDMNIST / "pneumoniamnist.npz").is_file():
        pytest.fail(f"real MedMNIST data expected at {SHARED_MEDMNIST} (../shared/data/medmnist)")
    return SHARED_MEDMNIST


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test reads the user's ~/.medmnist or cache, or writes to them."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEDSSL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MEDSSL_DATA", raising=False)
    monkeypatch.delenv("MEDSSL_MIRROR", raising=False)
    yield


def env_for_subprocess(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env.update(HOME=str(tmp_path / "home"), MEDSSL_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="2")
    env.pop("MEDSSL_DATA", None)
    return env


def cpu_store(tmp_path: Path, data_dir: Path | None, name: str = "r.duckdb"):
    """A results store under ``tmp_path`` and a quiet CPU context that reads ``data_dir``."""
    from medssl_core.run.context import Context
    from medssl_core.store import ResultsStore

    store = ResultsStore(tmp_path / name)
    ctx = Context(str(data_dir) if data_dir is not None else None, torch.device("cpu"), store.artifacts_dir,
                  store.checkpoints_dir, progress=False)
    return store, ctx


def execute_cleanly(plan, store, ctx):
    """Execute a plan; fail with every failed run's error if any failed."""
    from medssl_core.execute.local import execute

    summary = execute(plan, store, ctx, progress=False)
    assert not summary.failed, [r.run["error"] for r in summary.failed]
    return summary


@pytest.fixture
def http_server(tmp_path):
    """A folder served on 127.0.0.1 (downloads are tested against it, never the network): (folder, base url)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
