"""How runs are named in tables and summaries: decision variants, label fractions and transfer cells. Shared by
the CLI's summaries and the paper, so that both say the same thing the same way."""

from __future__ import annotations

from medssl_core.study import AS_PUBLISHED, CORRECTED

# The data a cell stands for: the source read and, for an encoder pretrained on another dataset (transfer),
# that dataset after an arrow, e.g. 'nih_chestxray14 ← chexpert'. SQL over the runs table or its views.
TRANSFER = " ← "
CELL_SOURCE_SQL = f"dataset_used || coalesce('{TRANSFER}' || nullif(pretrain_dataset, dataset), '')"


def parse_decisions(text: str | None) -> dict[str, str]:
    return dict(item.split("=", 1) for item in (text or "").split(",") if item)


def in_variant(decisions: dict[str, str], variant: str) -> bool:
    return all(v == variant for v in decisions.values())


def variant_label(decisions: dict[str, str]) -> str:
    if not decisions:
        return "-"
    if in_variant(decisions, AS_PUBLISHED):
        return "as published"
    if in_variant(decisions, CORRECTED):
        return "corrected"
    return "corrected: " + ", ".join(k for k, v in sorted(decisions.items()) if v == CORRECTED)


def format_fraction(fraction: float | None) -> str:
    """Label fractions exactly: 0.5 %, 1 %, 12.5 %, 100 %."""
    return f"{(1.0 if fraction is None else fraction) * 100:g} %"


def secondary_metric(metric: str) -> str:
    """Shown beside the main metric: AUC (accuracy alone hides a collapsed probe), or accuracy beside AUC."""
    return "accuracy" if metric == "auc" else "auc"
