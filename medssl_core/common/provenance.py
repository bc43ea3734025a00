"""Provenance of a run: code version, packages, hardware, determinism flags, data checksums."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import platform
import socket
import subprocess
import sys
from pathlib import Path

import torch

PACKAGES = ("torch", "torchvision", "numpy", "duckdb", "scikit-learn", "opencv-python-headless", "matplotlib",
            "tabulate", "medssl")


@functools.cache
def git_state(root: str | None = None) -> tuple[str | None, bool | None]:
    root = root or str(Path(__file__).resolve().parents[2])
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return commit, dirty if commit else None
    except (OSError, subprocess.SubprocessError):
        return None, None


@functools.cache
def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def environment(device: torch.device, device_name: str, deterministic: bool, data_files: dict[str, str]) -> dict:
    commit, dirty = git_state()
    versions = package_versions()
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "torch": torch.__version__,
        "torchvision": versions.get("torchvision"),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "cudnn": str(torch.backends.cudnn.version()) if device.type == "cuda" else None,
        "device_name": device_name,
        "threads": torch.get_num_threads(),
        "deterministic": deterministic,
        "packages": json.dumps(versions, sort_keys=True),
        "data_checksums": json.dumps(data_files, sort_keys=True),
    }
