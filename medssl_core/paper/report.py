"""`medssl paper --all`: one report over every study, from what `medssl paper` wrote for each (its summary.json:
tables as data, table cells with their run ids and the source's numbers), the database's runs (their state, code and
environment) and what each study's profiles could not plan here. It opens on a status table (the studies with runs
first); each study leads with its headline (reported vs reproduced, inside the seeds' spread or not); what did not
run is folded at the end. Built once as blocks, written twice: ``REPORT.md`` (figures linked, PNG and PDF) and a
self-contained ``REPORT.html`` (tables sortable and filterable, figures inline, no network).
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from medssl_core.common.atomic import write_atomic
from medssl_core.common.provenance import git_state
from medssl_core.data.locate import data_dirs
from medssl_core.data.medmnist_info import MEDMNIST
from medssl_core.data.registry import get_dataset
from medssl_core.data.sources import _root_name
from medssl_core.paper.labels import format_fraction, secondary_metric, variant_title
from medssl_core.paper.output import format_mean_std, tagged
from medssl_core.paper.provenance import describe_environments, run_states
from medssl_core.paper.rows import reported_by_cell
from medssl_core.paper.tables import MATCH_TOLERANCE, ROW_TAGS, within_spread
from medssl_core.plan.grid import expand
from medssl_core.plan.study import Study

TOP_DECISIONS = 5
MAX_INLINE_PNG = 2 * 2**20  # larger figures are linked, not inlined


# -- blocks: what the report says, before it is Markdown or HTML --------------------------------------------------
@dataclass(frozen=True)
class Link:
    text: str
    href: str


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    anchor: str | None = None


@dataclass(frozen=True)
class Text:
    text: str
    note: bool = False  # said in grey in HTML


@dataclass(frozen=True)
class Table:
    headers: list
    rows: list[list]  # cells: text, numbers or Link
    ids_column: int | None = None  # run ids, set small


@dataclass(frozen=True)
class Folded:
    """A list or a table shown folded (HTML ``<details>``), under a one-line summary."""
    summary: str
    body: list[str] | Table


@dataclass(frozen=True)
class Figures:
    folder: Path  # the profile's folder, relative to the report
    names: list[str]  # PNG files there (each with its PDF)


# -- what did not run here ----------------------------------------------------------------------------------------
def _expected(name: str, size: int | None) -> str:
    """The file or folder a registered dataset is read from, inside a data directory."""
    info = get_dataset(name)
    if info.kind == "merged":
        return " + ".join(_expected(p, size) for p in info.layout["parts"])
    return MEDMNIST[name].filename(size or 28) if info.kind == "medmnist" else f"{_root_name(info)}/"


def _obtain(name: str, size: int | None, listed: set[str]) -> str:
    """How to get a dataset; for datasets merged from others that lines of their own list (``listed``), a pointer."""
    info = get_dataset(name)
    if info.kind == "merged" and set(info.layout["parts"]) <= listed:
        return "each part as on its own line"
    how = info.obtain.strip() or f"from {info.source}"
    return how.replace(" --size N", "" if size in (None, 28) else f" --size {size}")


def _missing_dataset(study: Study, key: str, read_size: dict[str, int], profiles: list[str],
                     listed: set[str]) -> str:
    """One line for a dataset none of whose sources is here: where each would be read from and how to get it."""
    ds = next(d for d in study.datasets if d.key == key)
    ways = [f"`{_expected(s, read_size.get(s))}` ({_obtain(s, read_size.get(s), listed)})" for s in ds.sources]
    return (f"{ds.title} ({key}; profile{'s' if len(profiles) > 1 else ''} {', '.join(profiles)}): needs "
            + " or, as a stand-in, ".join(ways))


def not_run_here(study: Study, data_dir, ran_profiles: set[str]) -> list[str]:
    """Why parts of the study did not run here: one line per profile with no runs (and the command that runs it),
    then one line per dataset missing for them (where it is looked for, how to get it) and whatever else their
    plans skip (weights absent)."""
    profiles, missing, other = [], {}, {}
    for profile in study.profiles:
        if profile.name in ran_profiles:
            continue
        profiles.append(f"profile {profile.name}: no runs in this database"
                        + (" (sized for a GPU)" if profile.needs_gpu else "")
                        + f"; `medssl replicate {study.name} --profile {profile.name}` runs it")
        try:
            skipped = expand(study, profile.name, data_dir=data_dir, allow_download=False,
                             fingerprint_data=False).skipped
        except Exception as exc:  # a profile that cannot even be planned here says why
            skipped = [(f"profile {profile.name}", f"cannot be planned here: {type(exc).__name__}: {exc}")]
        read_size = {**profile.image_size, **profile.source_size}
        for what, why in skipped:
            kind, _, key = what.partition(" ")
            if kind == "dataset" and " " not in key:
                missing.setdefault(key, (read_size, []))[1].append(profile.name)
            elif "(see above)" not in why:  # a pairing whose dataset is missing: that dataset's line says it
                other.setdefault(f"{what}: {why}", None)
    listed = {s for d in study.datasets if d.key in missing for s in d.sources}
    return (profiles + [_missing_dataset(study, key, size, names, listed) for key, (size, names) in missing.items()]
            + list(other))


# -- a study's numbers --------------------------------------------------------------------------------------------
def _std(cell: dict) -> float | None:
    return cell["std"] if cell["std"] is not None and cell["std"] == cell["std"] else None  # NaN with one seed


def _number(cell: dict) -> str:
    """'81.25 ± 1.20 (n=3) †': mean ± std over seeds in %, † where a run collapsed to one class."""
    return format_mean_std(cell["mean"], _std(cell), cell["n"]) + (" †" if cell.get("collapsed") else "")


def _reported(cell: dict) -> str:
    if cell["reported"] is None:
        return "-"
    return f"{cell['reported'] * 100:.2f}" + (" (hard-coded)" if cell["reported_hard_coded"] else "")


def _verdict(cell: dict) -> str:
    if cell["reported"] is None:
        return "-"
    return "inside" if within_spread(cell["mean"], _std(cell), cell["reported"]) else "outside"


def _delta(cell: dict) -> str:
    return "-" if cell["reported"] is None else f"{(cell['mean'] - cell['reported']) * 100:+.2f}"


def _where(cell: dict) -> str:
    return cell["dataset"] + (f" ({cell['dataset_used']})" if cell["dataset_used"] != cell["dataset"] else "")


def _place(cell: dict) -> tuple:
    return cell["dataset"], cell["dataset_used"], cell["method"], cell["protocol"], cell["fraction"], cell["setting"]


def _variant_of(study: Study, summary: dict) -> dict[int, str]:
    """Each cell's variant in words, by position; '-' where the cell's runs count for both variants (no decision
    applies to them), except at its first place: the others are repeats (``None``)."""
    shown: dict[tuple, int] = {}
    out: dict[int, str | None] = {}
    for i, c in enumerate(summary["cells"]):
        key = (_place(c), c["metric"], c["run_ids"])
        if key in shown:
            out[shown[key]], out[i] = "- (no decision applies)", None
        else:
            shown[key], out[i] = i, variant_title(c["variant"], study.decisions) if study.decisions else "-"
    return out


def headline(study: Study, summary: dict) -> tuple[str, Table]:
    """Reported vs reproduced for the numbers the source reports (every cell where it reports none), the main
    metric and the other one (AUC beside accuracy) side by side: Δ and whether the seeds' spread holds the reported
    number. A set of runs that counts for both variants is one row."""
    main, second = summary["metric"], secondary_metric(summary["metric"])
    variant = _variant_of(study, summary)
    by_row: dict[tuple, dict] = {}
    for i, c in enumerate(summary["cells"]):
        if variant[i] is not None:
            by_row.setdefault((variant[i], *map(str, _place(c))), {})[c["metric"]] = c
    reports = any(c["reported"] is not None for c in summary["cells"])
    rows = []
    for (title, *_), metrics in sorted(by_row.items()):
        if reports and all(c["reported"] is None for c in metrics.values()):
            continue
        first = metrics.get(main) or metrics[second]
        line = [title, _where(first), tagged(first["method"], first["setting"]), first["protocol"],
                format_fraction(first["fraction"])]
        for metric in (main, second):
            c = metrics.get(metric)
            line += [_number(c), _reported(c), _delta(c), _verdict(c)] if c else ["-"] * 4
        rows.append([*line, first["run_ids"]])
    headers = ["variant", "dataset", "method", "protocol", "labels"]
    for metric in (main, second):
        headers += [f"{metric} reproduced (%)", f"{metric} reported (%)", "Δ (pp)", "seeds' spread"]
    intro = (f"Reported vs reproduced, test metrics. 'inside': the seeds' spread holds the reported number (|mean − "
             f"reported| ≤ max(2 std, {MATCH_TOLERANCE * 100:g} pp)); Δ = reproduced − reported." if reports else
             "The source reports no numbers for what ran here; the reproduced test metrics:")
    return intro, Table([*headers, "run ids"], rows, ids_column=len(headers))


def reported_status(study: Study, summaries: list[dict]) -> tuple[int, int, int]:
    """The source's numbers (those with a value): (inside the seeds' spread of a set of runs that is not stale,
    outside every such set, without runs here)."""
    cells: dict[tuple, list[dict]] = {}
    for summary in summaries:
        for c in summary["cells"]:
            if "‡" not in c["setting"]:
                cells.setdefault((c["dataset"], c["method"], c["protocol"], c["metric"], c["fraction"] or 1.0),
                                 []).append(c)
    inside = outside = none = 0
    for key, rep in reported_by_cell(study).items():
        if rep.value is None:
            continue
        ran = cells.get(key, [])
        inside += any(within_spread(c["mean"], _std(c), rep.value) for c in ran)
        outside += bool(ran) and not any(within_spread(c["mean"], _std(c), rep.value) for c in ran)
        none += not ran
    return inside, outside, none


def _cell_rows(study: Study, summary: dict) -> list[list]:
    """Every cell: one row per metric (a set of runs that counts for both variants once), those with a source's
    number first."""
    variant = _variant_of(study, summary)
    rows = []
    for i, c in sorted(enumerate(summary["cells"]), key=lambda ic: (
            ic[1]["reported"] is None, ic[1]["variant"], ic[1]["dataset"], ic[1]["method"], ic[1]["protocol"],
            ic[1]["fraction"], ic[1]["metric"])):
        if variant[i] is None:
            continue
        rows.append([variant[i], _where(c), tagged(c["method"], c["setting"]), c["protocol"],
                     format_fraction(c["fraction"]), c["metric"],
                     _number(c) + (f" § {c['environments']}" if c["environments"] else ""),
                     _reported(c), _delta(c), _verdict(c), c["run_ids"]])
    return rows


CELL_HEADERS = ["variant", "dataset", "method", "protocol", "labels", "metric", "reproduced (%, mean ± std over "
                "seeds; § the environments of runs that mix them)", "reported (%)", "Δ (pp)", "seeds' spread",
                "run ids"]
CROSS_HEADERS = ["method", "study", "profile", "variant", "dataset", "protocol", "labels",
                 "reproduced (%, mean ± std over seeds)", "run ids"]


def _cross_study_rows(sections: list[dict]) -> list[list]:
    """The main-metric cells of every method that ran in two studies or more (a plug-in method run as a guest,
    SimCLR in several studies), side by side: each cell still the mean of one config id."""
    cells = [(s["study"], summary, c) for s in sections for _, summary in s["profiles"] for c in summary["cells"]
             if c["metric"] == summary["metric"]]
    studies_of: dict[str, set[str]] = {}
    for study, _, c in cells:
        studies_of.setdefault(c["method"], set()).add(study.name)
    rows, shown = [], set()
    for study, summary, c in cells:
        # a run without decisions counts for both variants: its set of runs is shown once
        if len(studies_of[c["method"]]) < 2 or (study.name, c["run_ids"]) in shown:
            continue
        shown.add((study.name, c["run_ids"]))
        rows.append([tagged(c["method"], c["setting"]), study.name, summary["profile"], c["variant"], _where(c),
                     c["protocol"], format_fraction(c["fraction"]), _number(c), c["run_ids"]])
    return sorted(rows, key=lambda r: tuple(map(str, r[:7])))


def _top_decisions(summary: dict) -> tuple[list, list]:
    table = summary["tables"].get("decisions")
    if not table:
        return [], []
    rows = [r for r in table["rows"] if r[-1] not in ("-", "nan")]
    rows.sort(key=lambda r: -abs(float(r[-1])))
    return table["headers"], rows[:TOP_DECISIONS]


# -- the report, as blocks ----------------------------------------------------------------------------------------
def _sections(out: Path, studies: dict[str, Study], data_dir, not_written: dict[str, str]) -> list[dict]:
    """One per study, those with a written paper first."""
    sections = []
    for name, study in sorted(studies.items()):
        # a study not written now: what an earlier `medssl paper` left in its folder is not reported
        summaries = [] if name in not_written else sorted(out.glob(f"{name}/*/summary.json"))
        loaded = [json.loads(p.read_text()) for p in summaries]
        sections.append({"study": study, "profiles": [(p.parent, s) for p, s in zip(summaries, loaded, strict=True)],
                         "not_written": not_written.get(name),
                         "not_run": not_run_here(study, data_dir, {s["profile"] for s in loaded})})
    return sorted(sections, key=lambda s: not s["profiles"])


STATUS_HEADERS = ["study", "profiles with runs", "runs ok", "failed", "stale (kept)",
                  "reported numbers inside the seeds' spread", "outside", "no run here"]


def _status(sections: list[dict], states: dict[str, dict[str, int]]) -> Table:
    rows = []
    for s in sections:
        study, summaries = s["study"], [summary for _, summary in s["profiles"]]
        state = states.get(study.name, dict.fromkeys(("ok", "failed", "stale", "kept"), 0))
        inside, outside, none = reported_status(study, summaries)
        rows.append([Link(study.title, f"#{study.name}"),
                     ", ".join(f"{x['profile']} ({x['runs']} shown)" for x in summaries) or "-",
                     state["ok"], state["failed"], f"{state['stale']} ({state['kept']})", inside, outside, none])
    return Table(STATUS_HEADERS, rows)


def _written_section(s: dict, out: Path) -> list:
    study = s["study"]
    blocks: list = [Heading(2, study.title, study.name), Text(study.citation, note=True)]
    for folder, summary in s["profiles"]:
        rel = folder.relative_to(out)
        blocks += [Heading(3, f"Profile {summary['profile']}: {summary['runs']} runs"),
                   Text("Made with " + (describe_environments(summary.get("environments", [])) or "unrecorded code")
                        + f". All outputs: {rel}/README.md.", note=True)]
        intro, table = headline(study, summary)
        blocks += [Text(intro), table]
        if summary.get("kept_stale"):
            blocks.append(Text(f"‡ {len(summary['kept_stale'])} runs shown although stale: "
                               + " ".join(summary["kept_stale"]), note=True))
        cells = _cell_rows(study, summary)
        blocks.append(Folded(f"Every cell, each metric ({len(cells)} rows)", Table(CELL_HEADERS, cells,
                                                                                  ids_column=10)))
        headers, top = _top_decisions(summary)
        if top:
            blocks += [Text(f"The decisions that moved the numbers most ({len(top)} largest |Δ|; every decision: "
                            f"{rel}/decisions.md):"), Table(headers, top)]
        claims = summary["tables"].get("claims")
        if claims:
            blocks += [Text("The source's claims against the runs:"), Table(claims["headers"], claims["rows"])]
        elif summary["claims"]:
            blocks.append(Folded("Claims of the source (no comparison of them ran here)", summary["claims"]))
        if summary["figures"]:
            blocks.append(Figures(rel, summary["figures"]))
    if s["not_run"]:
        blocks.append(Folded(f"Not run here: {_count_not_run(s['not_run'])}", s["not_run"]))
    return blocks


def _count_not_run(lines: list[str]) -> str:
    profiles = sum(line.startswith("profile ") for line in lines)
    return f"{profiles} profile{'s' if profiles != 1 else ''}, {len(lines) - profiles} missing data or weights"


def _blocks(sections: list[dict], out: Path, header: str, states: dict, data_dir) -> list:
    blocks: list = [Heading(1, "medssl: cross-study report"), Text(header, note=True),
                    Text("Marks: † a run of the cell predicts one class on test (collapsed: its accuracy is the "
                         "majority-class rate); § the runs of a number ran in different environments; (hard-coded) "
                         "a source's number no run of the source backs. " + ROW_TAGS, note=True),
                    Heading(2, "Status", "status"), _status(sections, states)]
    cross = _cross_study_rows(sections)
    if cross:
        blocks += [Heading(2, "Methods across studies", "across"),
                   Text("Every cell of a method run in two studies or more (test metric of each study):"),
                   Table(CROSS_HEADERS, cross, ids_column=8)]
    for s in sections:
        if s["profiles"]:
            blocks += _written_section(s, out)
    idle = [s for s in sections if not s["profiles"]]
    if idle:
        blocks += [Heading(2, "Not run here", "not-run"),
                   Text("Data looked for in: " + ", ".join(str(d) for d in data_dirs(data_dir))
                        + " (`--data-dir` first; without it, the folder the runs read their files from).")]
        for s in idle:
            study = s["study"]
            why = s["not_written"] or ""
            why = "no runs in this database" if not why or "holds no finished runs" in why else f"not written: {why}"
            blocks += [Heading(3, study.title, study.name),
                       Folded(f"{why}; {_count_not_run(s['not_run'])}", s["not_run"])]
    return blocks


# -- Markdown -----------------------------------------------------------------------------------------------------
def _md_cell(v) -> str:
    text = f"[{v.text}]({v.href})" if isinstance(v, Link) else str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(headers: list, rows: list) -> str:
    return "\n".join(["| " + " | ".join(map(_md_cell, headers)) + " |", "|" + "---|" * len(headers),
                      *("| " + " | ".join(map(_md_cell, r)) + " |" for r in rows)]) + "\n"


def _markdown(blocks: list) -> str:
    parts = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append((f"<a id=\"{b.anchor}\"></a>\n" if b.anchor else "") + f"{'#' * b.level} {b.text}\n")
        elif isinstance(b, Text):
            parts.append(b.text + "\n")
        elif isinstance(b, Table):
            parts.append(_md_table(b.headers, b.rows))
        elif isinstance(b, Folded):
            parts.append(f"{b.summary}:\n\n" + (_md_table(b.body.headers, b.body.rows) if isinstance(b.body, Table)
                                                 else "".join(f"- {line}\n" for line in b.body)))
        elif isinstance(b, Figures):
            parts.append("Figures: " + ", ".join(f"[{f[:-4]}]({b.folder}/{f}) ([PDF]({b.folder}/{f[:-4]}.pdf))"
                                                 for f in b.names) + "\n")
    return "\n".join(parts)


# -- HTML ---------------------------------------------------------------------------------------------------------
_STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.3em 0 1.2em;font-size:13px}th,td{border:1px solid #ccc;padding:3px 6px}
th{background:#f0f0f0;position:sticky;top:0}table.sortable th{cursor:pointer;user-select:none}
th .arrow{color:#888;margin-left:.3em}th[aria-sort] .arrow{color:#000}td.ids{font-family:monospace;font-size:11px}
td.inside{background:#e3f4e3}td.outside{background:#fbe3e3}
figure{display:inline-block;vertical-align:top;max-width:48%;margin:.4em}
img{max-width:100%;border:1px solid #ddd}h2{border-bottom:2px solid #444;margin-top:2em}
.note{color:#555}.filters{margin-top:.6em;font-size:13px}.filters input,.filters select{margin-right:.6em}
details{margin:.4em 0}summary{cursor:pointer}"""
# Every sortable table gets a free-text filter (all words must occur in a row) and, for its dataset, method and
# variant columns, a choice of their values; a click on a header sorts by that column (numbers by value, '-'
# last), again the other way: ▲ ascending, ▼ descending, ⇅ not sorted by it.
_SCRIPT = """document.querySelectorAll('table.sortable').forEach(t=>{
const heads=[...t.tHead.rows[0].cells],body=t.tBodies[0],rows=[...body.rows],picks=[];
const box=document.createElement('div');box.className='filters';
const text=document.createElement('input');text.type='search';text.className='filter';
text.placeholder='filter rows (words)';box.appendChild(text);
heads.forEach((th,i)=>{const name=th.textContent.trim();if(!['dataset','method','variant'].includes(name))return;
const values=[...new Set(rows.map(r=>r.cells[i].textContent))].sort();if(values.length<2)return;
const s=document.createElement('select');s.className='filter-column';s.dataset.column=i;
s.add(new Option('every '+name,''));values.forEach(v=>s.add(new Option(v,v)));box.appendChild(s);picks.push(s)});
const apply=()=>{const words=text.value.toLowerCase().split(/\\s+/).filter(Boolean);rows.forEach(r=>{
const line=r.textContent.toLowerCase();r.hidden=!(words.every(w=>line.includes(w))&&
picks.every(s=>!s.value||r.cells[s.dataset.column].textContent===s.value))})};
text.addEventListener('input',apply);picks.forEach(s=>s.addEventListener('change',apply));t.before(box);
heads.forEach((th,i)=>{const arrow=document.createElement('span');arrow.className='arrow';arrow.textContent='⇅';
th.appendChild(arrow);th.title='sort by this column';th.addEventListener('click',()=>{
const up=th.getAttribute('aria-sort')!=='ascending';heads.forEach(h=>{h.removeAttribute('aria-sort');
h.querySelector('.arrow').textContent='⇅'});th.setAttribute('aria-sort',up?'ascending':'descending');
arrow.textContent=up?'▲':'▼';const key=r=>{const t=r.cells[i].textContent.trim(),n=parseFloat(t);
return isNaN(n)?[t==='-'||t==='',t]:[false,n]};rows.sort((a,b)=>{const x=key(a),y=key(b);
if(x[0]!==y[0])return x[0]?1:-1;const c=typeof x[1]===typeof y[1]?(x[1]>y[1]?1:x[1]<y[1]?-1:0):
String(x[1]).localeCompare(String(y[1]));return up?c:-c});rows.forEach(r=>body.appendChild(r))})})})"""


def _html_cell(v, ids: bool) -> str:
    if isinstance(v, Link):
        return f"<td><a href=\"{html.escape(v.href)}\">{html.escape(v.text)}</a></td>"
    text = str(v)
    kind = " class=ids" if ids else " class=inside" if text == "inside" else " class=outside" if text == "outside" \
        else ""
    return f"<td{kind}>{html.escape(text)}</td>"


def _html_table(b: Table) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in b.headers)
    body = "".join("<tr>" + "".join(_html_cell(v, j == b.ids_column) for j, v in enumerate(r)) + "</tr>"
                   for r in b.rows)
    return f"<table class=sortable><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"


def _html_figures(b: Figures, out: Path) -> str:
    parts = []
    for name in b.names:
        png = out / b.folder / name
        if png.is_file() and png.stat().st_size <= MAX_INLINE_PNG:
            parts.append(f"<figure><img alt=\"{html.escape(name)}\" src=\"data:image/png;base64,"
                         f"{base64.b64encode(png.read_bytes()).decode()}\"><figcaption>{html.escape(name)}"
                         "</figcaption></figure>")
        else:  # too large to inline: linked beside the report
            parts.append(f"<p><a href=\"{html.escape(str(b.folder / name))}\">{html.escape(name)}</a></p>")
    return "".join(parts)


def _html(blocks: list, out: Path) -> str:
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>medssl report</title><style>{_STYLE}</style>"
             "</head><body>"]
    for b in blocks:
        if isinstance(b, Heading):
            anchor = f" id=\"{html.escape(b.anchor)}\"" if b.anchor else ""
            parts.append(f"<h{b.level}{anchor}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Text):
            parts.append(f"<p{' class=note' if b.note else ''}>{html.escape(b.text)}</p>")
        elif isinstance(b, Table):
            parts.append(_html_table(b))
        elif isinstance(b, Folded):
            parts.append(f"<details><summary>{html.escape(b.summary)}</summary>"
                         + (_html_table(b.body) if isinstance(b.body, Table) else
                            "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in b.body) + "</ul>")
                         + "</details>")
        elif isinstance(b, Figures):
            parts.append(_html_figures(b, out))
    parts.append(f"<script>{_SCRIPT}</script></body></html>\n")
    return "".join(parts)


def write_report(out: Path, studies: dict[str, Study], db: Path, data_dir=None,
                 not_written: dict[str, str] | None = None) -> list[Path]:
    """REPORT.md and REPORT.html under ``out`` from the studies' generated folders there; ``not_written``: study ->
    why `medssl paper` wrote nothing for it this time."""
    commit, dirty = git_state()
    sections = _sections(out, studies, data_dir, not_written or {})
    made = describe_environments([e for s in sections for _, summary in s["profiles"]
                                  for e in summary.get("environments", [])])
    header = (f"Generated by `medssl paper --all` from {db} on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by "
              f"code {commit[:8] if commit else 'of unknown commit'}{' (uncommitted changes)' if dirty else ''}. "
              f"The runs shown were made with {made or 'no recorded code'}. Every reproduced number is the mean of "
              "the runs of one config id (same settings, code and data; seeds differ), listed beside it.")
    blocks = _blocks(sections, out, header, run_states(db, data_dir), data_dir)
    paths = [out / "REPORT.md", out / "REPORT.html"]
    write_atomic(paths[0], _markdown(blocks).encode())
    write_atomic(paths[1], _html(blocks, out).encode())
    return paths
