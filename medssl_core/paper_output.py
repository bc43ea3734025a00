"""Where paper outputs go: tables as Markdown + LaTeX (tabulate), figures as PNG + PDF (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from tabulate import tabulate


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
