"""Run identity that travels and survives growth: code fingerprints that are the same on every Python version, and
that cover what computes a run's numbers (its method, the losses it uses, the shared loop), not its neighbours."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from medssl_core.common import code_digest
from medssl_core.common.code_digest import CodeBase, source_digest
from medssl_core.data import sources
from medssl_core.plan import identity
from medssl_core.plan.catalog import get_study, studies
from medssl_core.plan.grid import expand
from medssl_core.plan.stale import stale_reasons

# A fixed source text and its committed fingerprint: any interpreter that runs this test (CI's, a user's, the GPU
# machine's) must compute the same value, or runs recorded on one machine would be stale on another.
GOLDEN_SOURCE = '''"""A module docstring."""
import torch
from medssl_core import losses


def scaled(x: torch.Tensor, k: float = 0.5) -> torch.Tensor:
    """Docstring."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    label = f"{k!r:>8} {x.shape[0]:d}"  # f-strings are split into several tokens on Python >= 3.12
    return losses.nt_xent(x * k, x, temperature=0.1), label


class Holder:
    value: int = 3

    def __init__(self) -> None:
        self.items = [i ** 2 for i in range(self.value) if i % 2]
'''
GOLDEN = "64fe3e399df5"


def test_golden_fingerprint_of_a_fixed_source():
    assert source_digest(GOLDEN_SOURCE) == GOLDEN


def test_fingerprints_ignore_what_cannot_change_a_number_but_not_numerics():
    base = source_digest(GOLDEN_SOURCE)
    cosmetic = ("# a comment\n" + GOLDEN_SOURCE.replace('"""Docstring."""', '"""Other words."""')
                .replace("k must be positive", "k > 0 please").replace("x * k, x,", "x * k,\n        x,"))
    assert cosmetic != GOLDEN_SOURCE and source_digest(cosmetic) == base
    for numeric in ("k: float = 0.4", "temperature=0.2", "{k!r:>9}", "i ** 3", "raise TypeError"):
        edited = GOLDEN_SOURCE.replace({"k: float = 0.4": "k: float = 0.5", "temperature=0.2": "temperature=0.1",
                                        "{k!r:>9}": "{k!r:>8}", "i ** 3": "i ** 2",
                                        "raise TypeError": "raise ValueError"}[numeric], numeric)
        assert edited != GOLDEN_SOURCE and source_digest(edited) != base, numeric
    # a statement moved out of its block changes the meaning, not the tokens: indentation counts
    assert source_digest("if a:\n    b()\n    c()\n") != source_digest("if a:\n    b()\nc()\n")


def _other_pythons() -> list[str]:
    """One interpreter per other Python 3.10-3.13 minor version installed with pyenv (as on CI's machines)."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    versions = Path(os.environ.get("PYENV_ROOT", "/nonexistent")) / "versions"
    found: dict[str, str] = {}
    for python in sorted(versions.glob("3.1[0-3].*/bin/python")):
        minor = python.parent.parent.name.rsplit(".", 1)[0]
        if minor != here:
            found.setdefault(minor, str(python))
    return sorted(found.values())


# code_digest.py as a file of its own (the standard library only), over every module of the package
_PARSE_ALL = """
import importlib.util, json, pathlib, sys
spec = importlib.util.spec_from_file_location("code_digest", sys.argv[1])
m = importlib.util.module_from_spec(spec); sys.modules["code_digest"] = m; spec.loader.exec_module(m)
out = {}
for p in sorted(pathlib.Path(sys.argv[2]).rglob("*.py")):
    out[str(p)] = [[sorted(u.binds), u.digest, sorted(u.reads), sorted(map(list, u.attributes)),
                    list(map(list, u.imports))] for u in m.parse_units(p.read_text(encoding="utf-8"), p.stem)]
print(json.dumps(out, sort_keys=True))
"""


def test_every_module_parses_the_same_on_every_python_found():
    """What an interpreter could change (each unit's digest, the names it binds, reads and imports) is compared
    between this Python and every other 3.10-3.13 on the machine, over the whole package."""
    others = _other_pythons()
    if not others:
        pytest.skip("no other Python 3.10-3.13 on this machine to compare with")
    args = [str(Path(code_digest.__file__)), str(identity.PACKAGE)]
    here = subprocess.run([sys.executable, "-c", _PARSE_ALL, *args], capture_output=True, text=True, check=True).stdout
    for python in others:
        there = subprocess.run([python, "-c", _PARSE_ALL, *args], capture_output=True, text=True, check=True).stdout
        differing = [m for m, units in json.loads(here).items() if json.loads(there).get(m) != units]
        assert not differing, f"{python} parses these modules differently: {differing}"


def _quick_specs():
    """Every run of every study's small profiles, planned without data."""
    for study in studies().values():
        for profile in study.profiles:
            if profile.name != "paper":
                yield from expand(study, profile.name, every_source=True, fingerprint_data=False,
                                  allow_download=False).specs


def _edited(edits: dict[str, list[tuple[str, str]] | tuple[str, str] | str]) -> CodeBase:
    """The installed code with ``edits``: module -> (old text, new text) pairs, each replaced once, or a whole new
    module's source."""
    real = code_digest._find_source

    def read(module: str):
        found = real(module)
        edit = edits.get(module)
        if edit is None:
            return found
        if isinstance(edit, str):
            return edit, False
        assert found is not None
        source = found[0]
        for old, new in [edit] if isinstance(edit, tuple) else edit:
            assert old in source, (module, old)
            source = source.replace(old, new, 1)
        return source, found[1]

    return CodeBase({identity.PACKAGE_NAME}, read)


NEW_LOSS = """import torch.nn.functional as F
from torch import Tensor


def hinge_alignment(z0: Tensor, z1: Tensor, margin: float = 0.5) -> Tensor:
    return F.relu(margin - F.cosine_similarity(z0, z1)).mean()
"""
NEW_METHOD = """from medssl_core import losses
from medssl_core.methods.base import register
from medssl_core.methods.two_view import _TwoViewEmbeddingLoss


@register("hinge")
class Hinge(_TwoViewEmbeddingLoss):
    loss = staticmethod(losses.hinge_alignment)
"""


def test_adding_a_method_and_a_loss_leaves_every_planned_run_as_it_was():
    grown = _edited({
        "medssl_core.losses.hinge": NEW_LOSS,  # a new module each, as a new method and loss come
        "medssl_core.methods.hinge": NEW_METHOD,
        "medssl_core.losses": [("\nLOSSES = {", "from medssl_core.losses.hinge import hinge_alignment\n\nLOSSES = {"),
                               ('"byol": byol', '"byol": byol, "hinge": hinge_alignment')],
    })
    checked = 0
    for spec in _quick_specs():
        for run in (spec, spec.pretrain):
            if run is not None:
                assert identity.code_fingerprint(run.kind, run.dataset_used, run.hparams, grown) == run.code, \
                    run.label()
                checked += 1
    assert checked > 500


def test_editing_the_loss_simclr_uses_makes_simclr_stale_and_vicreg_not():
    nt_xent_edited = _edited({"medssl_core.losses.contrastive": ("temperature: float = 0.5",
                                                                 "temperature: float = 0.4")})
    plan = expand(get_study("smalldatassl"), "quick", every_source=True, fingerprint_data=False, allow_download=False)
    by_method = {s.method: s for s in plan.pretrain}
    for method, changes in (("simclr", ["nt_xent"]), ("vicreg", []), ("dclw", []), ("simsiam", [])):
        spec = by_method[method]
        now = identity.code_fingerprint("pretrain", spec.dataset_used, spec.hparams, nt_xent_edited)
        assert sorted(m for m in now if now[m] != spec.code.get(m)) == changes, method
    # and through the stale check, as `replicate` and `paper` see it
    real = identity._codebase
    try:
        identity._codebase = lambda: nt_xent_edited
        assert stale_reasons(by_method["simclr"]) == ["code changed: nt_xent"]
        assert stale_reasons(by_method["vicreg"]) == []
        evaluation = next(s for s in plan.specs if s.kind == "evaluate" and s.method == "simclr")
        assert stale_reasons(evaluation) == ["its pretraining is stale (code changed: nt_xent)"]
    finally:
        identity._codebase = real


def test_a_method_reaches_its_own_loss_and_helpers_only():
    sg = identity.code_fingerprint("pretrain", "breastmnist", {"method": {"name": "sg_contrastive"}})
    simclr = identity.code_fingerprint("pretrain", "breastmnist", {"method": {"name": "simclr"}})
    assert {"SegContrastive", "weighted_nt_xent"} <= set(sg) and "SegContrastive" not in simclr
    assert {"SimCLR", "nt_xent"} <= set(simclr) and not {"SimCLR", "VICReg", "SegAttention", "vicreg"} & set(sg)
    evaluation = identity.code_fingerprint("evaluate", "breastmnist", {"protocol": {"kind": "fit"}})
    assert not {"nt_xent", "SimCLR", "Method", "pretrain", "run_pretrain"} & set(evaluation)


def test_the_pathology_mask_counts_the_lung_mask_helper_it_calls():
    hp = {"protocol": {"kind": "fit"}, "masks": "pathology_rule"}
    fingerprint = identity.code_fingerprint("evaluate", "breastmnist", hp)
    assert "scaled_kernel" in fingerprint and "lung_mask" not in fingerprint
    edited = _edited({"medssl_core.data.lung_mask": ("max(3, ", "max(5, ")})
    assert identity.code_changes(fingerprint, "evaluate", "breastmnist", hp) == []
    assert sorted(k for k, v in identity.code_fingerprint("evaluate", "breastmnist", hp, edited).items()
                  if fingerprint[k] != v) == ["scaled_kernel"]
    # an edit of the lung mask's own segmenter, which option 3 does not call, leaves option 3 current
    unrelated = _edited({"medssl_core.data.lung_mask": ("MIN_AREA, CENTRAL_MARGIN, KEEP = 0.01, 0.15, 2",
                                                        "MIN_AREA, CENTRAL_MARGIN, KEEP = 0.02, 0.15, 2")})
    assert identity.code_fingerprint("evaluate", "breastmnist", hp, unrelated) == fingerprint


def test_records_of_the_old_fingerprint_format_are_named_as_such():
    spec = next(iter(expand(get_study("demo"), "quick", every_source=True, fingerprint_data=False,
                            allow_download=False).specs))
    old = replace(spec, code={m: "0" * 12 for m in spec.code if m != identity.FORMAT_KEY})
    assert stale_reasons(old) == [identity.LEGACY]
    assert "Python versions" in identity.LEGACY


def test_the_decoded_image_cache_is_keyed_by_content_and_by_the_decoding_code(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for p in paths:
        cv2.imwrite(str(p), rng.integers(0, 256, (40, 40), dtype=np.uint8))
    decoded = []
    real_imread = cv2.imread
    monkeypatch.setattr(sources.cv2, "imread", lambda *a: decoded.append(a) or real_imread(*a))
    first = sources.read_images(paths, 16, 1)
    assert len(decoded) == 3 and np.array_equal(sources.read_images(paths, 16, 1), first) and len(decoded) == 3
    # other bytes under the same name, size and modification time (as cp -p leaves them): decoded again
    stat = paths[0].stat()
    cv2.imwrite(str(paths[0]), rng.integers(0, 256, (40, 40), dtype=np.uint8))
    assert paths[0].stat().st_size == stat.st_size
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert not np.array_equal(sources.read_images(paths, 16, 1)[0], first[0]) and len(decoded) == 6
    # an edit of the decoding code (here: the resize's interpolation) misses the cache too
    real_find = code_digest._find_source

    def edited(module):
        found = real_find(module)
        if module == "medssl_core.data.sources":
            return found[0].replace("cv2.INTER_AREA", "cv2.INTER_NEAREST"), found[1]
        return found

    monkeypatch.setattr(code_digest, "_find_source", edited)
    sources.read_images(paths, 16, 1)
    assert len(decoded) == 9


def test_moving_a_definition_to_another_module_leaves_runs_current():
    """Fingerprints are keyed by what a definition is called, not where it lives: a new layout re-runs nothing."""
    lung_source = (identity.PACKAGE / "data" / "lung_mask.py").read_text()
    helper = lung_source[lung_source.index("def scaled_kernel("):lung_source.index("\n\n\n", lung_source.index(
        "def scaled_kernel(")) + 1]
    moved = _edited({
        "medssl_core.data.lung_mask": (helper, "from medssl_core.data.kernels import scaled_kernel\n"),
        "medssl_core.data.kernels": "from medssl_core.data.lung_mask import NATIVE_SIDE\n\n\n" + helper,
    })
    assert "scaled_kernel" in moved.units("medssl_core.data.kernels")[1].binds
    for hp in ({"protocol": {"kind": "fit"}, "masks": "pathology_rule"}, {"masks": "lung_rule"}):
        kind = "evaluate" if "protocol" in hp else "pretrain"
        assert identity.code_fingerprint(kind, "breastmnist", hp, moved) == \
            identity.code_fingerprint(kind, "breastmnist", hp)


def test_the_packages_own_imports_inside_a_body_name_code_and_are_followed():
    """Where a lazily imported definition lives is no part of a unit's digest; what it computes is."""
    lazy = "def f(x):\n    from {} import g\n\n    return g(x) + 1\n"
    here, moved = (code_digest.parse_units(lazy.format(m), "medssl_core.a")
                   for m in ("medssl_core.b", "medssl_core.c.d"))
    assert here[0].digest == moved[0].digest
    other = code_digest.parse_units(lazy.format("numpy"), "medssl_core.a")
    assert other[0].digest != here[0].digest  # another package's import is code that runs: it counts
    base = CodeBase({"medssl_core"}, {"medssl_core.a": (lazy.format("medssl_core.b"), False),
                                      "medssl_core.b": ("def g(x):\n    return 2 * x\n", False)}.get)
    assert base.closure(base.unit_of("medssl_core.a", "f")) == {"medssl_core.a": {0}, "medssl_core.b": {0}}

