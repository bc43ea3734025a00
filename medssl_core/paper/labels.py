"""How runs are named in tables and summaries: decision variants, label fractions and transfer cells. Shared by
the CLI's summaries and the paper, so that both say the same thing the same way."""

from __future__ import annotations

from collections.abc import Sequence

from medssl_core.plan.study import AS_PUBLISHED, CORRECTED, Decision

# The data a cell stands for: the source read and, for an encoder pretrained on another dataset (transfer),
# that dataset after an arrow, e.g. 'nih_chestxray14 ← chexpert'. SQL over the runs table or its views.
TRANSFER = " ← "
CELL_SOURCE_SQL = f"dataset_used || coalesce('{TRANSFER}' || nullif(pretrain_dataset, dataset), '')"


def parse_decisions(text: str | None) -> dict[str, str]:
    return dict(item.split("=", 1) for item in (text or "").split(",") if item)


def in_variant(decisions: dict[str, str], variant: str) -> bool:
    return all(v == variant for v in decisions.values())


def drawn_variants(rows: list[dict]) -> list[str]:
    """The variants some run recorded a decision of; as published alone where no run records any (runs without
    decisions, e.g. random init, belong to every variant and make none of their own)."""
    recorded = [parse_decisions(r["decisions"]) for r in rows]
    return [v for v in (AS_PUBLISHED, CORRECTED) if any(d and in_variant(d, v) for d in recorded)] or [AS_PUBLISHED]


# a whole variant, where its decisions declare no labels of their own
VARIANT_TITLES = {AS_PUBLISHED: "as published (the study's code)", CORRECTED: "with every decision corrected"}


def variant_label(decisions: dict[str, str], declared: Sequence[Decision] = ()) -> str:
    """A run's variant in words (``decisions``: name -> as_published|corrected). Where every decision it records is
    among ``declared`` with labels, their labels say what it ran (e.g. 'the paper's rule: best validation AUC')."""
    if not decisions:
        return "-"
    named = {d.name: d for d in declared if d.labels}
    if decisions.keys() <= named.keys():
        return "; ".join(named[k].label(v) for k, v in sorted(decisions.items()))
    if in_variant(decisions, AS_PUBLISHED):
        return "as published"
    if in_variant(decisions, CORRECTED):
        return "corrected"
    return "corrected: " + ", ".join(k for k, v in sorted(decisions.items()) if v == CORRECTED)


def variant_title(variant: str, declared: Sequence[Decision]) -> str:
    """How a table or figure names a whole variant of a study with ``declared`` decisions: their labels where each
    has them, else VARIANT_TITLES."""
    if declared and all(d.labels for d in declared):
        return variant_label(dict.fromkeys((d.name for d in declared), variant), declared)
    return VARIANT_TITLES[variant]


def format_fraction(fraction: float | None) -> str:
    """Label fractions exactly: 0.5 %, 1 %, 12.5 %, 100 %."""
    return f"{(1.0 if fraction is None else fraction) * 100:g} %"


def secondary_metric(metric: str) -> str:
    """Shown beside the main metric: AUC (accuracy alone hides a collapsed probe), or accuracy beside AUC."""
    return "accuracy" if metric == "auc" else "auc"
