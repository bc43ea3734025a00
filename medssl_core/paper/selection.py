"""Which recorded runs a paper output may use: the runs of the study *as declared now*, under the current
code and data, and the runs of `medssl tune`'s best values (`replicate --overrides`), shown as their own variant.
Everything else is left out, and said so: runs of settings the study no longer declares, a search's other trials,
stale runs (kept only when `replicate --reuse-stale` chose them, or shown marked with `paper --include-stale`), and
runs that did not finish."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from medssl_core.plan.grid import expand
from medssl_core.plan.stale import OLD_FORMAT, current_data, parse_spec, stale_reasons
from medssl_core.plan.study import ALL_VARIANTS, Study, deep_merge

STALE = "stale: "  # how a left-out stale run's reason starts
# a row of the store's `trials` table: (Optuna study, trial number, the evaluation run it scored, params JSON, value)
Trial = tuple[str, int, str, str, float]


@dataclass
class Selection:
    accepted: dict[str, str] = field(default_factory=dict)  # run id -> '' or why it is shown although stale
    tuned: dict[str, str] = field(default_factory=dict)  # accepted run id -> the tune search whose best values it ran
    left_out: list[tuple[str, str, str]] = field(default_factory=list)  # (run id, label, why)


def declared_settings(study: Study, profile: str, overrides: dict | None = None,
                      methods: list[str] | None = None) -> set[str]:
    """Settings ids of every run the study declares under a profile: every evaluated dataset, method and
    protocol (also those the profile leaves out by default but `--datasets` / `--methods` may ask for), every
    source (stand-ins too), variant and precision, whatever data is present here. ``overrides``: merged as
    `replicate --overrides` merges them (e.g. `medssl tune`'s best values), into the runs of ``methods`` only."""
    ids = set()
    everything = {"datasets": [d.key for d in study.datasets if d.evaluated],
                  "methods": methods or [m.name for m in study.methods],
                  "protocols": [p.name for p in study.protocols]}
    for amp in ("off", "bf16"):
        plan = expand(study, profile, variant_names=ALL_VARIANTS, every_source=True, fingerprint_data=False,
                      overrides=deep_merge({"pretrain": {"amp": amp}, "evaluate": {"amp": amp}}, overrides or {}),
                      **everything)
        ids |= {s.settings_id for s in plan.specs}
    return ids


def best_trials(trials: list[Trial]) -> dict[str, Trial]:
    """Each search's best trial (highest value, then the first): the values `medssl tune --write` writes."""
    best: dict[str, Trial] = {}
    for trial in sorted(trials, key=lambda t: (t[0], -t[4], t[1])):
        best.setdefault(trial[0], trial)
    return best


def tuned_settings(study: Study, profile: str, trials: list[Trial]) -> dict[str, str]:
    """Settings id -> search, for the runs of each search's best values under ``profile``: what `medssl replicate
    --overrides` runs with the file `medssl tune --write` wrote (a search is named '<study>/<profile>/<method>/
    <protocol>/...', tune.tune)."""
    from medssl_core.execute.tune import overrides_of

    out: dict[str, str] = {}
    methods = {m.name for m in study.methods}
    for search, _, _, params, _ in best_trials(trials).values():
        _, searched_profile, method, protocol, *_ = search.split("/")
        if searched_profile == profile and method in methods:
            overrides = overrides_of(json.loads(params), method, protocol)
            for settings_id in declared_settings(study, profile, overrides, [method]):
                out.setdefault(settings_id, search)
    return out


def select(study: Study, recorded: list[tuple[str, str, str]], reused: set[str], *, profile: str | None = None,
           data_dir=None, trials: list[Trial] | None = None, include_stale: bool = False) -> Selection:
    """``recorded``: (run_id, status, spec_json) of the study's runs; ``trials``: the study's `medssl tune` trials.
    ``include_stale``: stale runs are accepted (marked with why) instead of left out."""
    out = Selection()
    data = current_data(data_dir)
    declared: dict[str, set[str]] = {}
    tuned: dict[str, dict[str, str]] = {}
    profiles = {p.name for p in study.profiles}
    specs = {run_id: parse_spec(spec_json) for run_id, _, spec_json in recorded}
    trial_of: dict[str, str] = {}  # the runs of every trial (the scored evaluation and what it read) -> search
    trials = trials or []
    for search, _, run_id, _, _ in trials:
        scored = specs.get(run_id)
        for rid in (run_id, *(scored.depends_on if scored is not None else ())):
            trial_of.setdefault(rid, search)
    for run_id, status, _ in recorded:
        spec = specs[run_id]
        if spec is None:
            out.left_out.append((run_id, "?", OLD_FORMAT))
            continue
        if profile is not None and spec.profile != profile:
            continue
        label = f"{spec.profile}: {spec.label()}"
        if status != "ok":
            out.left_out.append((run_id, label, f"status {status}"))
            continue
        if spec.profile not in profiles:
            out.left_out.append((run_id, label, f"profile {spec.profile!r} is no longer declared"))
            continue
        if spec.profile not in declared:
            declared[spec.profile] = declared_settings(study, spec.profile)
            tuned[spec.profile] = tuned_settings(study, spec.profile, trials) if trials else {}
        search = None
        if spec.settings_id not in declared[spec.profile]:
            search = tuned[spec.profile].get(spec.settings_id)
            if search is None:
                out.left_out.append((run_id, label, f"a `medssl tune` trial of {trial_of[run_id]}, not its best values"
                                     if run_id in trial_of else "settings no longer declared by the study"))
                continue
        reasons = stale_reasons(spec, data, reused)
        if reasons and run_id not in reused and not include_stale:
            out.left_out.append((run_id, label, STALE + "; ".join(reasons)))
            continue
        kept = [f"its {what} is a kept stale run" for upstream, what in ((spec.pretrain, "pretraining"),
                                                                         (spec.start, "starting run"))
                if upstream is not None and upstream.run_id in reused]
        why = "; ".join(reasons + kept)
        if reasons and run_id not in reused:
            out.accepted[run_id] = "stale (shown with --include-stale): " + why
        else:
            out.accepted[run_id] = "kept stale (--reuse-stale): " + why if why else ""
        if search is not None:
            out.tuned[run_id] = search
    return out
