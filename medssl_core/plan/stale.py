"""Stale runs: recorded under code or data that has changed since. A stale run keeps its numbers in the
database, but no table uses it (unless `replicate --reuse-stale` kept it on purpose) and `replicate` re-runs
it by default."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable

from medssl_core.data.dataset import data_version
from medssl_core.plan.identity import FORMAT_KEY, LEGACY, code_changes, differing
from medssl_core.plan.runspec import RunSpec

OLD_FORMAT = "recorded by an older medssl without code and data fingerprints"


def parse_spec(spec_json: str | None) -> RunSpec | None:
    """The spec of a recorded run, or None for records written before fingerprints existed."""
    try:
        spec = RunSpec.from_json(spec_json or "")
    except (ValueError, TypeError):
        return None
    return spec if spec.code else None


def current_data(data_dir=None) -> Callable[[str, int | None], str | None]:
    @functools.cache
    def version(name: str, size: int | None) -> str | None:
        try:
            return data_version(name, size, data_dir)
        except Exception:  # unreadable data: its runs cannot be checked, they are not declared stale for it
            return None
    return version


def _size(spec: RunSpec) -> int | None:
    return spec.hparams.get("source_size") or spec.hparams.get("image_size")


def stale_reasons(spec: RunSpec, data: Callable[[str, int | None], str | None] | None = None,
                  kept: set[str] | frozenset = frozenset()) -> list[str]:
    """Why a recorded run no longer matches the current code (and data, where ``data`` can tell), following the
    runs it reads (its pretraining, the evaluation it starts from). An upstream run in ``kept`` (stale, kept on
    purpose) does not make the runs that read it stale."""
    reasons = []
    changed = code_changes(spec.code, spec.kind, spec.dataset_used, spec.hparams)
    if changed == [LEGACY]:
        reasons.append(LEGACY)
    elif changed:
        reasons.append(f"code changed: {', '.join(changed)}")
    if data is not None and spec.data is not None:
        now = data(spec.dataset_used, _size(spec))
        more = spec.hparams.get("extra_images")
        if more and now is not None:  # a pretraining that adds another dataset's images holds both versions
            extra = data(more["dataset"], _size(spec))
            now = None if extra is None else f"{now}+{extra}"
        if now is not None and now != spec.data:
            reasons.append(f"data changed: {spec.dataset_used} {spec.data[:8]} -> {now[:8]}")
    for upstream, what in ((spec.pretrain, "pretraining"), (spec.start, "starting run")):
        if upstream is not None and upstream.run_id not in kept:
            inner = stale_reasons(upstream, data, kept)
            if inner:
                reasons.append(f"its {what} is stale ({'; '.join(inner)})")
    return reasons


def differences(old: RunSpec, new: RunSpec) -> list[str]:
    """What differs between a recorded run and the planned run of the same settings and seed."""
    if FORMAT_KEY not in old.code:
        return [LEGACY]
    out = []
    changed = differing(old.code, new.code)
    if changed:
        out.append(f"code changed: {', '.join(changed)}")
    if new.data is not None and old.data != new.data:
        out.append(f"data changed: {old.dataset_used}")
    for what in ("pretrain", "start"):
        before, after = getattr(old, what), getattr(new, what)
        if before is not None and after is not None and before.run_id != after.run_id:
            out += [f"{'pretraining' if what == 'pretrain' else 'starting run'} {why}"
                    for why in differences(before, after)]
    return out or ["code or data changed"]


def summarise(reasons: list[list[str]]) -> str:
    counts = Counter(r for rs in reasons for r in rs)
    return "; ".join(f"{why} ({n})" for why, n in counts.most_common())


def staleness_rows(rows: list[tuple[str, str]], data_dir=None) -> list[tuple[str, bool, str]]:
    """(run_id, stale, why) for recorded (run_id, spec_json) pairs."""
    data = current_data(data_dir)
    out = []
    for run_id, spec_json in rows:
        spec = parse_spec(spec_json)
        reasons = [OLD_FORMAT] if spec is None else stale_reasons(spec, data)
        out.append((run_id, bool(reasons), "; ".join(reasons)))
    return out

