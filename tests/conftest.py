from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import medssl_core  # noqa: F401  (first: makes torchvision importable over a CPU torch)

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parent.parent
SHARED_MEDMNIST = ROOT.parent / "shared" / "data" / "medmnist"


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
