"""Where paper outputs go: tables as Markdown + LaTeX (tabulate), figures as PNG + PDF (matplotlib); and the marks
every table shares: how the configs met in one place are named, and which numbers mix environments."""

from __future__ import annotations

import textwrap
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from tabulate import tabulate


def mean_std(values: list[float]) -> tuple[float, float | None, int]:
    """Mean, sample standard deviation (None for one value) and count: what every table cell states."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), (float(a.std(ddof=1)) if len(a) > 1 else None), len(a)


def format_mean_std(mean: float, std: float | None, n: int | None = None, scale: float = 100) -> str:
    """'81.25 ± 1.20 (n=3)' in percent; no spread for one run; no count where a column gives it (``n`` None)."""
    text = f"{mean * scale:.2f}" + (f" ± {std * scale:.2f}" if std is not None else "")
    return text + (f" (n={n})" if n is not None else "")


def wrap(text: str, width: int = 22) -> str:
    """A long method or class name on several lines rather than over its neighbour's."""
    return textwrap.fill(text, width, break_long_words=False, break_on_hyphens=False)


def seeds_said(counts: set[int]) -> str:
    """What a figure's spread is over, given the number of seeds of each thing drawn: never 'mean ± std' of one."""
    if max(counts) == 1:
        return "one seed each (n = 1, no spread)"
    n = f"{min(counts)}-{max(counts)}" if len(counts) > 1 else f"{max(counts)}"
    return f"mean ± sample std over n = {n} seeds" + ("; none at n = 1" if min(counts) == 1 else "")


def write_table(out: Path, stem: str, title: str, headers: list, table: list, note: str) -> list[Path]:
    md = out / f"{stem}.md"
    md.write_text(f"# {title}\n\n{note}\n\n" + tabulate(table, headers, tablefmt="github") + "\n")
    tex = out / f"{stem}.tex"
    tex.write_text(f"% {title}\n% {note}\n" + tabulate(table, headers, tablefmt="latex_booktabs") + "\n")
    return [md, tex]


def save_png(fig, out: Path, name: str) -> Path:
    """A tool's single PNG (``medssl augment show``, ``medssl masks show``): ``out/name``, the figure closed."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_figure(fig, out: Path, stem: str) -> list[Path]:
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=130, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def config_tags(configs: dict[str, list[dict]], show_precision: bool) -> dict[str, str]:
    """config id -> how a table names its runs beside the other configs met in one place, main one first: '' for
    the declared, current one with most runs; else 'tuned' (`medssl tune`'s best values), the precision (where the
    table holds several), the config id where those do not tell it apart, and '‡ why' for runs shown although stale.
    ``configs``: each config id's metric rows (``paper.load_rows``)."""
    def rank(config: str) -> tuple:
        first = configs[config][0]
        return bool(first["tuned"]), bool(first["kept_stale"]), -len(configs[config]), config

    tags: dict[str, str] = {}
    named: set[str] = set()
    for config in sorted(configs, key=rank):
        first = configs[config][0]
        parts = [p for p, shown in (("tuned", first["tuned"]), (first["precision"], show_precision)) if shown]
        if ", ".join(parts) in named:
            parts.append(f"config {config[:8]}")
        named.add(", ".join(parts))
        stale = sorted({r["kept_stale"] for r in configs[config] if r["kept_stale"]})
        if stale:
            parts.append("‡ " + "; ".join(stale))
        tags[config] = ", ".join(parts)
    return tags


def tags_by_key(runs: dict[tuple, list[dict]], show_precision: bool) -> dict[tuple, str]:
    """``config_tags`` for keys whose last part is a config id, among the keys that differ in it only."""
    places: dict[tuple, dict[str, list[dict]]] = defaultdict(dict)
    for key, rows in runs.items():
        places[key[:-1]][key[-1]] = rows
    return {(*place, config): tag for place, configs in places.items()
            for config, tag in config_tags(configs, show_precision).items()}


def tagged(title: str, tag: str) -> str:
    return title + (f" [{tag}]" if tag else "")


class EnvironmentNotes:
    """Numbered marks (§1, §2, ...) for the numbers of one table whose runs ran in more than one environment (torch
    version, device, precision: ``paper.load_rows``' 'environment'), and the footnote that lists them."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def mark(self, where: str, runs: Iterable[dict]) -> str:
        """' §N' if ``runs`` (metric rows) ran in several environments, each then listed under N; else ''."""
        mixed = mixed_environments(runs)
        if not mixed:
            return ""
        self.lines.append(f"§{len(self.lines) + 1} {where}: {mixed}.")
        return f" §{len(self.lines)}"

    def note(self) -> str:
        return (" § marks a number whose runs ran in different environments (torch, device, precision): "
                + " ".join(self.lines)) if self.lines else ""


def mixed_environments(runs: Iterable[dict]) -> str:
    """'torch 2.4.1, cpu, fp32 (2 runs); torch 2.5.0, NVIDIA H200, fp32 (1 run)' where runs ran in more than one
    environment, else ''."""
    counts = Counter(r["environment"] for r in {r["run_id"]: r for r in runs}.values())
    if len(counts) < 2:
        return ""
    return "; ".join(f"{env} ({n} run{'s' if n > 1 else ''})" for env, n in sorted(counts.items()))
