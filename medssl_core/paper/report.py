"""`medssl paper --all`: one report over every study, from what `medssl paper` wrote for each (its summary.json:
tables as data, table cells with their run ids and the source's numbers) and from what each study's paper profile
could not plan here. Written twice: ``REPORT.md`` (figures linked, PNG and PDF) and a self-contained
``REPORT.html`` (tables sortable by a click on a header, figures inline, no network), each number with its run ids.
"""

from __future__ import annotations

import base64
import html
import json
from datetime import datetime, timezone
from pathlib import Path

from medssl_core.common.atomic import write_atomic
from medssl_core.common.provenance import git_state
from medssl_core.paper.labels import format_fraction
from medssl_core.paper.output import tagged
from medssl_core.plan.grid import expand
from medssl_core.plan.study import Study

TOP_DECISIONS = 5
MAX_INLINE_PNG = 2 * 2**20  # larger figures are linked, not inlined


def _pct(value) -> str:
    return "-" if value is None else f"{value * 100:.2f}"


def not_run_here(study: Study, data_dir, ran_profiles: set[str]) -> list[str]:
    """Why parts of the study did not run here: each profile with no runs, and what its plan skips (data or
    weights absent, with the instructions to get them)."""
    out = []
    for profile in study.profiles:
        if profile.name in ran_profiles:
            continue
        why = f"profile {profile.name!r} has no runs in this database"
        if profile.needs_gpu:
            why += " (sized for a GPU)"
        try:
            skipped = expand(study, profile.name, data_dir=data_dir, allow_download=False,
                             fingerprint_data=False).skipped
        except Exception as exc:  # a profile that cannot even be planned here says why
            skipped = [("plan", f"{type(exc).__name__}: {exc}")]
        out.append(why + ("; its plan skips: " + "; ".join(f"{what}: {reason}" for what, reason in skipped)
                          if skipped else ""))
    return out


def _cell_rows(summary: dict) -> list[list]:
    """Reported vs reproduced: one row per table cell, those with a source's number first."""
    rows = []
    for c in sorted(summary["cells"], key=lambda c: (c["reported"] is None, c["variant"], c["dataset"], c["method"],
                                                     c["protocol"], c["fraction"])):
        delta = None if c["reported"] is None else c["mean"] - c["reported"]
        std = c["std"] if c["std"] == c["std"] else None  # NaN with one seed
        rows.append([c["variant"], c["dataset"] + (f" ({c['dataset_used']})" if c["dataset_used"] != c["dataset"]
                                                   else ""),
                     tagged(c["method"], c["setting"]), c["protocol"], format_fraction(c["fraction"]),
                     _pct(c["mean"]) + ("" if std is None else f" ± {std * 100:.2f}") + f" (n={c['n']})"
                     + (f" § {c['environments']}" if c["environments"] else ""),
                     _pct(c["reported"]) + (" (hard-coded)" if c["reported_hard_coded"] else ""),
                     "-" if delta is None else f"{delta * 100:+.2f}", c["run_ids"]])
    return rows


CELL_HEADERS = ["variant", "dataset", "method", "protocol", "labels", "reproduced (%, mean ± std over seeds; § the "
                "environments of runs that mix them)",
                "reported (%)", "Δ (pp)", "run ids"]


CROSS_HEADERS = ["method", "study", "profile", "variant", "dataset", "protocol", "labels",
                 "reproduced (%, mean ± std over seeds)", "run ids"]


def _cross_study_rows(sections: list[dict]) -> list[list]:
    """The cells of every method that ran in two studies or more (a plug-in method run as a guest, SimCLR in
    several studies), side by side: each cell still the mean of one config id."""
    cells = [(s["study"], summary, c) for s in sections for _, summary in s["profiles"] for c in summary["cells"]]
    studies_of: dict[str, set[str]] = {}
    for study, _, c in cells:
        studies_of.setdefault(c["method"], set()).add(study.name)
    rows, shown = [], set()
    for study, summary, c in cells:
        # a run without decisions counts for both variants: its set of runs is shown once
        if len(studies_of[c["method"]]) < 2 or (study.name, c["run_ids"]) in shown:
            continue
        shown.add((study.name, c["run_ids"]))
        std = c["std"] if c["std"] == c["std"] else None
        rows.append([tagged(c["method"], c["setting"]), study.name, summary["profile"], c["variant"],
                     c["dataset"] + (f" ({c['dataset_used']})" if c["dataset_used"] != c["dataset"] else ""),
                     c["protocol"], format_fraction(c["fraction"]),
                     _pct(c["mean"]) + ("" if std is None else f" ± {std * 100:.2f}") + f" (n={c['n']})", c["run_ids"]])
    return sorted(rows, key=lambda r: tuple(map(str, r[:7])))


def _top_decisions(summary: dict) -> tuple[list, list]:
    table = summary["tables"].get("decisions")
    if not table:
        return [], []
    rows = [r for r in table["rows"] if r[-1] not in ("-", "nan")]
    rows.sort(key=lambda r: -abs(float(r[-1])))
    return table["headers"], rows[:TOP_DECISIONS]


def _sections(out: Path, studies: dict[str, Study], data_dir, not_written: dict[str, str]) -> list[dict]:
    sections = []
    for name, study in sorted(studies.items()):
        # a study not written now: what an earlier `medssl paper` left in its folder is not reported
        summaries = [] if name in not_written else sorted(out.glob(f"{name}/*/summary.json"))
        loaded = [json.loads(p.read_text()) for p in summaries]
        sections.append({"study": study, "profiles": [(p.parent, s) for p, s in zip(summaries, loaded, strict=True)],
                         "not_written": not_written.get(name),
                         "not_run": not_run_here(study, data_dir, {s["profile"] for s in loaded})})
    return sections


def _not_written(section: dict) -> str:
    return f"Not written: {section['not_written']}" if section["not_written"] else \
        "No runs of this study in the database."


def _md_table(headers: list, rows: list) -> str:
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")
    return "\n".join(["| " + " | ".join(map(cell, headers)) + " |", "|" + "---|" * len(headers),
                      *("| " + " | ".join(map(cell, r)) + " |" for r in rows)]) + "\n"


def _markdown(sections: list[dict], out: Path, header: str) -> str:
    parts = [f"# medssl: cross-study report\n\n{header}\n\n## Studies\n\n"
             + "".join(f"- [{s['study'].title}](#{s['study'].name})\n" for s in sections)]
    cross = _cross_study_rows(sections)
    if cross:
        parts.append("\n## Methods across studies\n\nEvery cell of a method run in two studies or more (test "
                     "metric of each study):\n\n" + _md_table(CROSS_HEADERS, cross))
    for s in sections:
        study = s["study"]
        parts.append(f"\n<a id=\"{study.name}\"></a>\n## {study.title}\n\n{study.citation}\n\n")
        if not s["profiles"]:
            parts.append(_not_written(s) + "\n\n")
        for folder, summary in s["profiles"]:
            rel = folder.relative_to(out)
            parts.append(f"### Profile {summary['profile']}: {summary['runs']} runs "
                         f"([all outputs]({rel}/README.md))\n\nReported vs reproduced, test {summary['metric']}:\n\n"
                         + _md_table(CELL_HEADERS, _cell_rows(summary)))
            headers, top = _top_decisions(summary)
            if top:
                parts.append(f"\nThe decisions that moved the numbers most ({len(top)} largest |Δ|; "
                             f"[every decision]({rel}/decisions.md)):\n\n" + _md_table(headers, top))
            claims = summary["tables"].get("claims")
            if claims:
                parts.append("\nThe source's claims against the runs:\n\n" + _md_table(claims["headers"],
                                                                                       claims["rows"]))
            elif summary["claims"]:
                parts.append("\nClaims of the source (no comparison of them ran here):\n"
                             + "".join(f"- {c}\n" for c in summary["claims"]))
            if summary["figures"]:
                parts.append("\nFigures: " + ", ".join(
                    f"[{f[:-4]}]({rel}/{f}) ([PDF]({rel}/{f[:-4]}.pdf))" for f in summary["figures"]) + "\n")
        parts.append("\nNot run here:\n" + ("".join(f"- {w}\n" for w in s["not_run"]) or "- nothing\n"))
    return "".join(parts)


_STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:13px}th,td{border:1px solid #ccc;padding:3px 6px}
th{background:#f0f0f0;cursor:pointer;position:sticky;top:0}td.ids{font-family:monospace;font-size:11px}
img{max-width:100%;border:1px solid #ddd;margin:.4em 0}h2{border-bottom:2px solid #444;margin-top:2em}
.note{color:#555}"""
# a click on a header sorts its table by that column (numbers by value), again: the other way
_SORT = """document.querySelectorAll('table.sortable th').forEach((th,i)=>th.addEventListener('click',()=>{
const body=th.closest('table').tBodies[0],rows=[...body.rows],up=th.dataset.up!=='1';th.dataset.up=up?'1':'0';
const key=r=>{const t=r.cells[i].innerText,n=parseFloat(t);return isNaN(n)?t:n};
rows.sort((a,b)=>{const x=key(a),y=key(b);return (x>y?1:x<y?-1:0)*(up?1:-1)});rows.forEach(r=>body.appendChild(r))}))"""


def _html_table(headers: list, rows: list, ids_column: int | None = None) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = []
    for r in rows:
        cells = []
        for j, v in enumerate(r):
            if j == ids_column:
                cells.append(f"<td class=ids>{html.escape(str(v))}</td>")
            elif ids_column is not None and j == 5:  # the reproduced number carries its run ids
                cells.append(f"<td title=\"runs: {html.escape(str(r[ids_column]))}\">{html.escape(str(v))}</td>")
            else:
                cells.append(f"<td>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table class=sortable><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>\n"


def _html(sections: list[dict], out: Path, header: str) -> str:
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>medssl report</title><style>{_STYLE}</style>"
             f"</head><body><h1>medssl: cross-study report</h1><p class=note>{html.escape(header)}</p><ul>"
             + "".join(f"<li><a href=\"#{s['study'].name}\">{html.escape(s['study'].title)}</a></li>"
                       for s in sections) + "</ul>"]
    cross = _cross_study_rows(sections)
    if cross:
        parts.append("<h2>Methods across studies</h2><p>Every cell of a method run in two studies or more (test "
                     "metric of each study):</p>" + _html_table(CROSS_HEADERS, cross))
    for s in sections:
        study = s["study"]
        parts.append(f"<h2 id=\"{study.name}\">{html.escape(study.title)}</h2><p class=note>"
                     f"{html.escape(study.citation)}</p>")
        if not s["profiles"]:
            parts.append(f"<p>{html.escape(_not_written(s))}</p>")
        for folder, summary in s["profiles"]:
            parts.append(f"<h3>Profile {html.escape(summary['profile'])}: {summary['runs']} runs</h3>"
                         f"<p>Reported vs reproduced, test {html.escape(summary['metric'])} (hover a number for its "
                         "runs):</p>" + _html_table(CELL_HEADERS, _cell_rows(summary), ids_column=8))
            headers, top = _top_decisions(summary)
            if top:
                parts.append(f"<p>The decisions that moved the numbers most ({len(top)} largest |Δ|):</p>"
                             + _html_table(headers, top))
            claims = summary["tables"].get("claims")
            if claims:
                parts.append("<p>The source's claims against the runs:</p>"
                             + _html_table(claims["headers"], claims["rows"]))
            for name in summary["figures"]:
                png = folder / name
                if png.is_file() and png.stat().st_size <= MAX_INLINE_PNG:
                    data = base64.b64encode(png.read_bytes()).decode()
                    parts.append(f"<figure><img alt=\"{html.escape(name)}\" src=\"data:image/png;base64,{data}\">"
                                 f"<figcaption>{html.escape(name)}</figcaption></figure>")
        parts.append("<p>Not run here:</p><ul>" + ("".join(f"<li>{html.escape(w)}</li>" for w in s["not_run"])
                                                    or "<li>nothing</li>") + "</ul>")
    parts.append(f"<script>{_SORT}</script></body></html>\n")
    return "".join(parts)


def write_report(out: Path, studies: dict[str, Study], db: Path, data_dir=None,
                 not_written: dict[str, str] | None = None) -> list[Path]:
    """REPORT.md and REPORT.html under ``out`` from the studies' generated folders there; ``not_written``: study ->
    why `medssl paper` wrote nothing for it this time."""
    commit, dirty = git_state()
    header = (f"Generated by `medssl paper --all` from {db} on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, code "
              f"{commit or 'unknown'}{' (uncommitted changes)' if dirty else ''}. Every reproduced number is the mean "
              "of the runs of one config id (same settings, code and data; seeds differ), listed beside it; "
              "'hard-coded' marks a source number no run of the source backs.")
    sections = _sections(out, studies, data_dir, not_written or {})
    paths = [out / "REPORT.md", out / "REPORT.html"]
    write_atomic(paths[0], _markdown(sections, out, header).encode())
    write_atomic(paths[1], _html(sections, out, header).encode())
    return paths
