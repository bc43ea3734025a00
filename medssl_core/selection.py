"""Which recorded runs a paper output may use: the runs of the study *as declared now*, under the current
code and data. Everything else is left out, and said so: runs of settings the study no longer declares,
stale runs (kept only when `replicate --reuse-stale` chose them), and runs that did not finish."""

from __future__ import annotations

from dataclasses import dataclass, field

from medssl_core.grid import ALL_VARIANTS, expand
from medssl_core.stale import OLD_FORMAT, current_data, parse_spec, stale_reasons
from medssl_core.study import Study


@dataclass
class Selection:
    accepted: dict[str, str] = field(default_factory=dict)  # run id -> '' or the note of a kept stale run
    left_out: list[tuple[str, str, str]] = field(default_factory=list)  # (run id, label, why)


def declared_settings(study: Study, profile: str) -> set[str]:
    """Settings ids of every run the study declares under a profile: every evaluated dataset, method and
    protocol (also those the profile leaves out by default but `--datasets` / `--methods` may ask for), every
    source (stand-ins too), variant and precision, whatever data is present here."""
    ids = set()
    everything = {"datasets": [d.key for d in study.datasets if d.evaluated],
                  "methods": [m.name for m in study.methods], "protocols": [p.name for p in study.protocols]}
    for amp in ("off", "bf16"):
        plan = expand(study, profile, variant_names=ALL_VARIANTS, every_source=True, fingerprint_data=False,
                      overrides={"pretrain": {"amp": amp}, "evaluate": {"amp": amp}}, **everything)
        ids |= {s.settings_id for s in plan.specs}
    return ids


def select(study: Study, recorded: list[tuple[str, str, str]], reused: set[str], *, profile: str | None = None,
           data_dir=None) -> Selection:
    """``recorded``: (run_id, status, spec_json) of the study's runs."""
    out = Selection()
    data = current_data(data_dir)
    declared: dict[str, set[str]] = {}
    profiles = {p.name for p in study.profiles}
    for run_id, status, spec_json in recorded:
        spec = parse_spec(spec_json)
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
        if spec.settings_id not in declared[spec.profile]:
            out.left_out.append((run_id, label, "settings no longer declared by the study"))
            continue
        reasons = stale_reasons(spec, data, reused)
        if reasons and run_id not in reused:
            out.left_out.append((run_id, label, "stale: " + "; ".join(reasons)))
            continue
        if spec.pretrain is not None and spec.pretrain.run_id in reused:
            reasons.append("its pretraining is a kept stale run")
        out.accepted[run_id] = ("kept stale (--reuse-stale): " + "; ".join(reasons)) if reasons else ""
    return out
