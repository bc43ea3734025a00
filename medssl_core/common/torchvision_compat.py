"""Make ``import torchvision`` work over a CPU-only torch.

Why this exists: torchvision 0.28.0 is published on PyPI only as a CUDA build. Its ``_C.so`` links
``libtorch_cuda.so``, so over a CPU torch the native ops never load, and
``torchvision/_meta_registrations.py`` then registers fake kernels for ``torchvision::nms``/``qnms``
without checking that the ops exist: ``import torchvision`` raises
``RuntimeError: operator torchvision::nms does not exist``.

The fix: if (and only if) the native library cannot be loaded, define the two op *schemas* before the first
torchvision import. Models, ``transforms.v2``, datasets and utils then work; the C++ ops themselves
(``ops.nms``, ``roi_align``, ``torchvision.io`` codecs) stay unusable, and medssl does not use them.
On a machine where torchvision's native library loads (CUDA torch, or a matching CPU build) this does nothing.
This module is the one place that knows about the problem; ``medssl_core/__init__.py`` calls it first.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path

import torch

_SCHEMAS = {
    "nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}

_state: dict[str, bool] = {}


def _native_library_loads() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.submodule_search_locations is None:
        return True  # torchvision absent: nothing to patch, the import error will speak for itself
    for location in spec.submodule_search_locations:
        for lib in Path(location).glob("_C*.so"):
            try:
                torch.ops.load_library(str(lib))
                return True
            except OSError:
                return False
    return False


def ensure_torchvision_importable() -> bool:
    """Return True if the schemas had to be defined (CPU torch with a CUDA torchvision)."""
    if "patched" in _state:
        return _state["patched"]
    patched = False
    if "torchvision" not in sys.modules and not _native_library_loads():
        for name, schema in _SCHEMAS.items():
            with contextlib.suppress(RuntimeError):  # already defined earlier in this process
                torch.library.define(f"torchvision::{name}", schema)
        patched = True
    _state["patched"] = patched
    return patched
