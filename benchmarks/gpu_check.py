"""One command that checks medssl on a lent GPU machine (one GPU, no network, minutes): the bench, every study's
quick profile, the MedMNIST v2 reference and the tests marked ``cuda``, each step a subprocess with its own time
limit, into one folder with a ``summary.md``. How to carry what the machine lacks: docs/gpu.md.

    benchmarks/gpu_check.sh [--out DIR] [--budget-s 480] [--jobs N] [--only bench,pytest-cuda]
    benchmarks/gpu_check.sh --dry-run     # on a CPU: every step in its smallest form, the same folder

The bench runs alone (a throughput measured beside other work says nothing); the other steps then share the GPU,
``--jobs`` at a time, until the budget is spent. A step that fails or runs out of time is reported and the rest go
on; the exit status is 1 if any did. ``--dry-run`` runs the bench's smoke grid on the CPU, each replicate with
``--dry-run`` (it lists its plan and writes nothing) and ``pytest -m cuda`` (every test skips without CUDA).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# import name -> distribution: what medssl imports that a bare GPU image may lack (docs/gpu.md carries them as wheels)
REQUIRED = {"pydantic": "pydantic", "pydantic_core": "pydantic-core", "annotated_types": "annotated-types",
            "typing_inspection": "typing-inspection", "duckdb": "duckdb", "pytorch_grad_cam": "grad-cam",
            "ttach": "ttach", "torch": "torch", "torchvision": "torchvision", "timm": "timm", "numpy": "numpy",
            "sklearn": "scikit-learn", "scipy": "scipy", "cv2": "opencv-python-headless", "tabulate": "tabulate",
            "matplotlib": "matplotlib", "tqdm": "tqdm", "h5py": "h5py", "yaml": "pyyaml", "pytest": "pytest",
            "hypothesis": "hypothesis"}

# the versions summary.md lists beside torch's: what differs most between GPU images and medssl's pins
PACKAGES_SHOWN = ("torchvision", "timm", "numpy", "duckdb", "pydantic", "grad-cam", "ttach", "ray")
# of the budget, run alone: the full grid's eager pipelines at --bench-steps x --bench-repeats, then the captured
# step's two launch-bound cases, compilation included (docs/gpu.md)
EXCLUSIVE_SHARE = {"bench": 0.25, "bench-captured": 0.25}
RESERVE_S = 15.0  # kept back for the last steps' clean stop and the summary
STOP_GRACE_S = 10.0  # after SIGINT (replicate and bench record what finished), before the group is killed
MIN_STEP_S = 5.0  # a step that would get less is not started
# relative weights of the steps sharing the GPU (guessed H200 seconds, docs/gpu.md): with fewer --jobs than steps
# each one's limit is its share of the time left after the bench
WEIGHTS = {"quick": 90.0, "reference": 100.0, "pytest": 90.0}
KNOWN_PIPELINES = ("medssl", "seed_style", "ceiling", "captured")  # the bench's, in the order shown; others follow
TAIL_LINES = 25
FAILED_RUNS_SHOWN = 5


@dataclass
class Step:
    name: str  # also its log's and database's file name
    kind: str  # bench | quick | reference | pytest
    argv: list[str]
    weight: float
    exclusive: bool = False  # runs before the others, alone on the machine
    db: Path | None = None
    skip: str | None = None  # why it does not run


@dataclass
class Outcome:
    step: Step
    status: str  # ok | failed | timed out | skipped
    rc: int | None = None
    wall_s: float = 0.0
    limit_s: float = 0.0
    why: str = ""
    tail: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def missing_packages() -> list[str]:
    return [f"{module} ({dist})" for module, dist in REQUIRED.items() if importlib.util.find_spec(module) is None]


def child_env(data_dir: Path | None, threads: int) -> dict[str, str]:
    """The steps import medssl from this checkout (and carried wheels from PYTHONPATH), never an installed copy."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    if data_dir is not None:
        env["MEDSSL_DATA"] = str(data_dir)
    return env


MACHINE_PY = """
import json, os, platform, sys, torch
from importlib import metadata
def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
cuda = torch.cuda.is_available()
print(json.dumps({"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                  "cudnn": torch.backends.cudnn.version() if cuda else None, "cuda_available": cuda,
                  "gpu": torch.cuda.get_device_name(0) if cuda else None,
                  "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30) if cuda else None,
                  "cpus": os.cpu_count(), "platform": platform.platform(),
                  "packages": {n: version(n) for n in sys.argv[1:]}}))
"""


def machine(env: dict[str, str]) -> dict:
    """What the steps will run on, asked of a child so that this process never holds a CUDA context."""
    try:
        done = subprocess.run([sys.executable, "-c", MACHINE_PY, *PACKAGES_SHOWN], env=env, capture_output=True,
                              text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return {"error": "importing torch and asking for the GPU took over 120 s"}
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"rc {done.returncode}"}
    return json.loads(done.stdout)


def pinned_torch() -> str | None:
    """The torch version constraints.txt pins (what medssl is tested with)."""
    text = (ROOT / "constraints.txt").read_text() if (ROOT / "constraints.txt").is_file() else ""
    found = re.search(r"^torch==(\S+)", text, re.MULTILINE)
    return found.group(1) if found else None


@dataclass
class Catalog:
    quick: list[str]  # studies with a quick profile
    no_quick: list[str]
    reference_methods: list[str]
    reference_variants: list[str]
    reference_datasets: list[str]  # the reference profile's own datasets
    shipped: dict[str, int]  # MedMNIST subsets of the reference study present in the data folder -> training images


def read_catalog(data_dir: Path | None) -> Catalog:
    """The registered studies and which MedMNIST subsets are here (imported late: after the package check)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from medssl_core.data.dataset import is_available
    from medssl_core.data.medmnist_info import MEDMNIST
    from medssl_core.plan.catalog import studies

    found = studies()
    quick = sorted(n for n, s in found.items() if any(p.name == "quick" for p in s.profiles))
    reference_study = found.get("medmnist_ssl")
    profile = next((p for p in reference_study.profiles if p.name == "reference"), None) if reference_study else None
    shipped = {}
    if reference_study is not None:
        for ds in reference_study.datasets:
            source = ds.sources[0]
            if source in MEDMNIST and is_available(source, 28, data_dir):
                shipped[ds.key] = MEDMNIST[source].counts[0]
    return Catalog(quick=quick, no_quick=sorted(set(found) - set(quick)),
                   reference_methods=list(profile.methods or ()) if profile else [],
                   reference_variants=list(profile.variants) if profile else [],
                   reference_datasets=list(profile.datasets or ()) if profile else [], shipped=shipped)


def plan_steps(args: argparse.Namespace, out: Path, catalog: Catalog | None, catalog_error: str | None,
               threads: int) -> list[Step]:
    """Every step of the check, in its GPU form or (``args.dry_run``) its smallest CPU form."""
    py, dry = sys.executable, args.dry_run
    device = "cpu" if dry else "cuda"
    db_dir, scratch = out / "db", Path(args.scratch)
    if dry:
        bench_sizing = ["--grid", "smoke", "--steps", "2", "--repeats", "1", "--workers", "1"]
    else:
        bench_sizing = ["--grid", "full", "--steps", str(args.bench_steps), "--repeats", str(args.bench_repeats)]
    bench_db = db_dir / "bench.duckdb"
    bench = [py, "-m", "medssl_core.cli", "bench", "--device", device, "--db", str(bench_db)]
    # once compiled, a pass of the small cases takes a fraction of a second: more steps and repeats cost nothing
    captured = ["--grid", "small", "--pipelines", "ceiling,captured", "--steps", "12", "--repeats", "3"]
    steps = [Step("bench", "bench", [*bench, *bench_sizing, "--pipelines", "medssl,seed_style,ceiling"], 0.0,
                  exclusive=True, db=bench_db),
             Step("bench-captured", "bench", [*bench, *captured], 0.0, exclusive=True, db=bench_db,
                  skip="skipped: compiling a ResNet-18 step takes minutes on a CPU (tests/test_capture.py and "
                       "tests/test_bench.py check the captured step there)" if dry else None)]

    def replicate(name: str, kind: str, study: str, options: list[str], gpu_profile: bool = False,
                  skip: str | None = None) -> Step:
        db = db_dir / f"{name}.duckdb"
        argv = [py, "-m", "medssl_core.cli", "replicate", study, *options, "--device", device, "--no-download",
                "--no-progress", "--threads", str(threads), "--db", str(db), "--artifacts-dir", str(scratch / name)]
        if args.data_dir:
            argv += ["--data-dir", str(args.data_dir)]
        if dry:
            argv += ["--dry-run", *(["--allow-slow"] if gpu_profile else [])]
        return Step(name, kind, argv, WEIGHTS[kind], db=db, skip=skip)

    if catalog is None:
        steps.append(Step("studies", "quick", [], 0.0, skip=f"skipped: the catalog did not load: {catalog_error}"))
    else:
        no_data = None if catalog.shipped else (
            f"skipped: no MedMNIST file in {args.data_dir or '$MEDSSL_DATA / ~/.medmnist'} (set MEDSSL_DATA or "
            "--data-dir: docs/gpu.md)")
        for study in catalog.quick:
            # stand-in weights: the quick profiles' ImageNet starts are not in this machine's caches (no network)
            steps.append(replicate(f"quick-{study}", "quick", study, ["--profile", "quick", "--seeds", "0",
                                                                      "--stand-in-weights"], skip=no_data))
        steps += [Step(f"quick-{s}", "quick", [], 0.0, skip="skipped: no quick profile") for s in catalog.no_quick]
        steps += reference_steps(args, catalog, replicate)
    junit = out / "logs" / "pytest-cuda.xml"
    # tests/test_cuda.py first (sync, determinism, bf16, layout: seconds), then the rest (the captured step compiles):
    # a step cut short by its limit has checked the cheap ones
    steps.append(Step("pytest-cuda", "pytest", [py, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
                                                f"--junitxml={junit}", "tests/test_cuda.py", "tests"],
                      WEIGHTS["pytest"]))
    return steps


def reference_steps(args: argparse.Namespace, catalog: Catalog, replicate) -> list[Step]:
    """The MedMNIST v2 reference on the subsets asked for (default: its profile's own) that are here, one step (and
    database) a network so that they share the GPU instead of queueing in one process; the other subsets here are
    named with why they do not run."""
    if not catalog.reference_methods:
        return [Step("reference", "reference", [], 0.0, skip="skipped: medmnist_ssl has no reference profile")]
    wanted = args.reference_datasets.split(",") if args.reference_datasets else catalog.reference_datasets
    runs = len(catalog.reference_methods) * len(catalog.reference_variants) * len(args.reference_seeds)
    steps = []
    for dataset in sorted(set(wanted) | set(catalog.shipped), key=lambda d: (d not in wanted, d)):
        if dataset not in catalog.shipped:
            steps.append(Step(f"reference-{dataset}", "reference", [], 0.0,
                              skip=f"skipped: {dataset}.npz (28 px) is not in the data folder"))
        elif dataset not in wanted:
            steps.append(Step(f"reference-{dataset}", "reference", [], 0.0, skip=(
                f"skipped: not in --reference-datasets ({catalog.shipped[dataset]:,} training images x 100 epochs x "
                f"{runs} runs does not fit the default budget; name it there with a larger --budget-s)")))
        else:
            seeds, variants = ",".join(map(str, args.reference_seeds)), ",".join(catalog.reference_variants)
            steps += [replicate(f"reference-{dataset}-{method}", "reference", "medmnist_ssl", [
                "--profile", "reference", "--datasets", dataset, "--methods", method, "--seeds", seeds,
                "--variants", variants], gpu_profile=True) for method in catalog.reference_methods]
    return steps


def select(steps: list[Step], only: str | None) -> list[Step]:
    if not only:
        return steps
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    return [s for s in steps if any(s.name == w or s.name.startswith(w + "-") for w in wanted)]


class Runner:
    """Runs steps as process groups with time limits; stops them all on Ctrl-C."""

    def __init__(self, out: Path, env: dict[str, str], deadline: float):
        self.out, self.env, self.deadline = out, env, deadline
        self.live: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.interrupted = False

    def run(self, step: Step, limit_s: float) -> Outcome:
        if step.skip:
            return Outcome(step, "skipped", why=step.skip)
        limit_s = min(limit_s, self.deadline - time.monotonic() - STOP_GRACE_S)
        if self.interrupted or limit_s < MIN_STEP_S:
            why = "interrupted" if self.interrupted else "the budget was spent before it could start"
            return Outcome(step, "skipped", why=f"skipped: {why}")
        log = self.out / "logs" / f"{step.name}.log"
        say(f"start {step.name} (limit {limit_s:.0f} s)")
        start = time.monotonic()
        with open(log, "w") as f:
            f.write(f"$ {shlex.join(step.argv)}\n")
            f.flush()
            proc = subprocess.Popen(step.argv, cwd=ROOT, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                    **OWN_GROUP)
            with self.lock:
                self.live.add(proc)
            timed_out = False
            try:
                proc.wait(timeout=limit_s)
                kill_group(proc)
            except subprocess.TimeoutExpired:
                timed_out = True
                stop(proc)
            except KeyboardInterrupt:  # Ctrl-C while this thread waits (the main one: the bench's)
                stop(proc)
                raise
            finally:
                with self.lock:
                    self.live.discard(proc)
        wall = time.monotonic() - start
        tail = log.read_text(errors="replace").splitlines()[-TAIL_LINES:]
        if timed_out:
            outcome = Outcome(step, "timed out", proc.returncode, wall, limit_s, f"timed out after {limit_s:.0f} s")
        elif proc.returncode == 0:
            outcome = Outcome(step, "ok", 0, wall, limit_s)
        elif self.interrupted:
            outcome = Outcome(step, "failed", proc.returncode, wall, limit_s, f"interrupted (rc {proc.returncode})")
        else:
            outcome = Outcome(step, "failed", proc.returncode, wall, limit_s, f"failed rc {proc.returncode}")
        outcome.tail = tail if outcome.status != "ok" else []
        outcome.notes = step_notes(step, log)
        say(f"{outcome.status:9s} {step.name} ({wall:.1f} s)")
        return outcome

    def stop_all(self) -> None:
        self.interrupted = True
        with self.lock:
            live = list(self.live)
        for proc in live:
            stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """SIGINT first (replicate and bench keep what finished), then SIGKILL to what is left of the group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_GRACE_S)
    kill_group(proc)
    proc.wait()


def kill_group(proc: subprocess.Popen) -> None:
    """Whatever a step left running in its group (DataLoader workers, a local Ray) goes with it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


# Each step leads a process group of its own, so that it stops whole; in this session, so that whoever ends the
# session (a lent machine's command returning) ends the steps too (process_group is Python 3.11's; setsid before)
OWN_GROUP = {"process_group": 0} if sys.version_info >= (3, 11) else {"start_new_session": True}


PLANNED = re.compile(r"(\d+) pretraining \+ (\d+) evaluation runs planned, (\d+) to run")


def step_notes(step: Step, log: Path) -> list[str]:
    """What a step's log says that the summary should: the runs planned, what it skipped, the tests' counts."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    notes = []
    for pre, ev, todo in PLANNED.findall(text):
        notes.append(f"planned {int(pre) + int(ev)} runs ({pre} pretraining), {todo} to run")
    notes += [line.split("; ")[0][:200] for line in text.splitlines() if line.startswith(("SKIPPED", "STAND-IN"))]
    if step.kind == "pytest":
        notes += junit_counts(step)
    return notes


def junit_counts(step: Step) -> list[str]:
    xml = next((Path(a.split("=", 1)[1]) for a in step.argv if a.startswith("--junitxml=")), None)
    if xml is None or not xml.is_file():
        return []
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    return [f"tests: {passed} passed, {n['failures']} failed, {n['errors']} errors, {n['skipped']} skipped"]


def say(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def run_all(steps: list[Step], runner: Runner, budget_s: float, jobs: int, started: float) -> list[Outcome]:
    """The exclusive steps one after another, then the rest ``jobs`` at a time, heaviest first. A step starting
    gets its weight's share of the time left among the steps not finished (all of it when every step has a job),
    so that time one step leaves over goes to those after it, and one hung step cannot take more than its share."""
    outcomes: dict[str, Outcome] = {}
    for step in [s for s in steps if s.exclusive]:
        outcomes[step.name] = runner.run(step, budget_s * EXCLUSIVE_SHARE[step.name])
    shared = sorted([s for s in steps if not s.exclusive], key=lambda s: -s.weight)
    unfinished = {"weight": sum(s.weight for s in shared if not s.skip)}
    lock = threading.Lock()

    def run_one(step: Step) -> Outcome:
        with lock:
            left = runner.deadline - time.monotonic()
            limit = left * min(1.0, step.weight * jobs / max(unfinished["weight"], step.weight, 1e-9))
        try:
            return runner.run(step, limit)
        finally:
            with lock:
                unfinished["weight"] -= 0.0 if step.skip else step.weight

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {s.name: pool.submit(run_one, s) for s in shared}
        try:
            for name, future in futures.items():
                while not future.done():  # polling: a blocking result() would not see Ctrl-C
                    time.sleep(0.2)
                outcomes[name] = future.result()
        except KeyboardInterrupt:
            runner.stop_all()
            for name, future in futures.items():
                outcomes[name] = future.result()
    say(f"all steps done in {time.monotonic() - started:.0f} s")
    return [outcomes[s.name] for s in steps]


# -- the summary --------------------------------------------------------------------------------------------------
def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")
    return ["| " + " | ".join(map(cell, headers)) + " |", "|" + " --- |" * len(headers),
            *("| " + " | ".join(map(cell, r)) + " |" for r in rows)]


def bench_table(db: Path) -> list[str]:
    """pairs/s per case (rows) and pipeline (columns), medians over the database's measurements; pipelines this
    script does not know get columns too."""
    from medssl_core.store import run_sql

    columns, rows = run_sql(db, "SELECT * FROM bench")
    if not rows:
        return ["(the bench table is empty)"]
    at = {c: i for i, c in enumerate(columns)}
    cases: dict[tuple, dict[str, list[float]]] = {}
    peaks: dict[tuple, float] = {}
    tflops: dict[tuple, tuple[float, float]] = {}  # the best pipeline's achieved TFLOP/s and the measured peak
    for r in rows:
        case = tuple(r[at[c]] for c in ("arch", "size", "method", "batch"))
        cases.setdefault(case, {}).setdefault(r[at["pipeline"]], []).append(r[at["pairs_per_s"]])
        if "peak_mem_mb" in at and r[at["peak_mem_mb"]] is not None:
            peaks[case] = max(peaks.get(case, 0.0), r[at["peak_mem_mb"]])
        if r[at["tflops"]] if "tflops" in at else None:
            tflops[case] = max(tflops.get(case, (0.0, 0.0)), (r[at["tflops"]], r[at["peak_tflops"]] or 0.0))
    seen = {p for by in cases.values() for p in by}
    pipelines = [p for p in KNOWN_PIPELINES if p in seen] + sorted(seen - set(KNOWN_PIPELINES))
    ratios = [("medssl", "seed_style", "x"), ("medssl", "ceiling", ""), ("captured", "ceiling", "")]
    table = []
    for case in sorted(cases, key=lambda c: (str(c[0]), c[1] or 0, str(c[2]), c[3] or 0)):
        by = cases[case]
        medians = {p: statistics.median(by[p]) for p in by}
        shown = [f"{medians[a] / medians[b]:.2f}{unit}" if medians.get(b) and a in medians else "-"
                 for a, b, unit in ratios]
        table.append([*case, *(f"{medians[p]:,.0f}" if p in medians else "-" for p in pipelines), *shown,
                      "{:.1f} / {:.0f}".format(*tflops[case]) if case in tflops else "-",
                      f"{peaks[case]:,.0f}" if case in peaks else "-"])
    devices = sorted({str(r[at["device"]]) for r in rows}) if "device" in at else []
    return [f"pairs/s (image pairs a second, median of the database's passes); device: {', '.join(devices)}; "
            "TFLOP/s: the fastest pipeline's, against the device's measured matrix-product peak", "",
            *md_table(["arch", "px", "method", "batch", *pipelines,
                       *(f"{a.replace('_', '-')} / {b.replace('_', '-')}" for a, b, _ in ratios), "TFLOP/s / peak",
                       "peak MB"], table)]


def run_counts(dbs: list[Path]) -> list[str]:
    """Runs per study and profile over the steps' databases, by status, with the devices they recorded."""
    from medssl_core.store import run_sql

    counts: dict[tuple, dict[str, int]] = {}
    devices: dict[tuple, set[str]] = {}
    where: dict[tuple, set[str]] = {}
    for db in dbs:
        for study, profile, status, device, n in run_sql(
                db, "SELECT study, profile, status, device, count(*) FROM runs GROUP BY ALL")[1]:
            key = (study, profile)
            counts.setdefault(key, {})[status] = counts.get(key, {}).get(status, 0) + n
            devices.setdefault(key, set()).add(str(device))
            where.setdefault(key, set()).add(db.name)
    if not counts:
        return ["(no runs recorded)"]
    statuses = sorted({s for by in counts.values() for s in by}, key=lambda s: (s != "ok", s != "failed", s))
    table = md_table(["study", "profile", *statuses, "devices", "databases"],
                     [[*key, *(counts[key].get(s, 0) for s in statuses), ", ".join(sorted(devices[key])),
                       ", ".join(sorted(where[key]))] for key in sorted(counts)])
    failed = []
    for db in dbs:
        for run_id, label, error in run_sql(
                db, "SELECT run_id, concat_ws('/', dataset, method, protocol), error FROM runs "
                    "WHERE status = 'failed' ORDER BY run_id LIMIT ?", [FAILED_RUNS_SHOWN])[1]:
            last = (error or "").strip().splitlines()[-1:] or ["(no error recorded)"]
            failed.append(f"- {db.name}: {run_id} {label}: {last[0][:300]}")
    return table + (["", f"Failed runs (at most {FAILED_RUNS_SHOWN} a database; the last line of each error):", "",
                     *failed] if failed else [])


def write_summary(out: Path, outcomes: list[Outcome], info: dict, args: argparse.Namespace, wall_s: float,
                  problems: list[str]) -> Path:
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "failed", "timed out", "skipped")}
    gpu = info.get("gpu") or "no CUDA device"
    pin = pinned_torch()
    torch_line = f"{info.get('torch')}" + (f" (constraints.txt pins {pin})" if pin and pin != info.get("torch") else "")
    mode = "dry run on the CPU (every step in its smallest form: no number means anything)" if args.dry_run else "GPU"
    lines = [f"# medssl GPU check, {out.name}", "", f"- mode: {mode}",
             f"- machine: {gpu}" + (f", {info['gpu_memory_gib']} GiB" if info.get("gpu_memory_gib") else "")
             + f"; {info.get('cpus')} CPUs; {info.get('platform')}",
             f"- torch {torch_line}, CUDA {info.get('cuda')}, cuDNN {info.get('cudnn')}, Python {info.get('python')}",
             "- packages: " + ", ".join(f"{n} {v or 'absent'}" for n, v in info.get("packages", {}).items()),
             f"- command: `{shlex.join(['benchmarks/gpu_check.py', *args.argv])}`",
             f"- result: {counts['ok']} ok, {counts['failed']} failed, {counts['timed out']} timed out, "
             f"{counts['skipped']} skipped; {wall_s:.0f} s of a {args.budget_s:.0f} s budget, --jobs {args.jobs}",
             *(f"- problem: {p}" for p in problems), "", "## Steps", "",
             f"$OUT is this folder; $SCRATCH ({args.scratch}) holds the runs' artifacts and checkpoints.", ""]
    lines += md_table(["step", "status", "wall s", "limit s", "command"],
                      [[o.step.name, o.why if o.status != "ok" else "ok", f"{o.wall_s:.1f}",
                        f"{o.limit_s:.0f}" if o.limit_s else "-",
                        f"`{shown(o.step.argv, out, Path(args.scratch))}`" if o.step.argv else "-"] for o in outcomes])
    noted = [o for o in outcomes if o.notes]
    if noted:
        lines += ["", "## What the steps said", ""]
        for o in noted:
            lines += [f"- {o.step.name}:", *(f"  - {n}" for n in o.notes)]
    broken = [o for o in outcomes if o.status in ("failed", "timed out")]
    if broken:
        lines += ["", "## Failures (last lines of each log)", ""]
        for o in broken:
            lines += [f"### {o.step.name}: {o.why}", "", f"log: `logs/{o.step.name}.log`", "", "```", *o.tail, "```",
                      ""]
    lines += ["", "## Bench", ""]
    bench_db = next((o.step.db for o in outcomes if o.step.kind == "bench"), None)
    lines += safely(bench_table, bench_db) if bench_db and bench_db.is_file() else ["(no bench database)"]
    dbs = sorted(o.step.db for o in outcomes if o.step.kind in ("quick", "reference") and o.step.db
                 and o.step.db.is_file())
    lines += ["", "## Runs per study", ""]
    lines += safely(run_counts, dbs) if dbs else [
        "(no study database: " + ("replicate --dry-run writes none)" if args.dry_run else "no step recorded runs)")]
    path = out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def shown(argv: list[str], out: Path, scratch: Path) -> str:
    """The command as one would type it: `medssl ...` for the CLI, the two folders as $OUT and $SCRATCH."""
    if argv[1:3] == ["-m", "medssl_core.cli"]:
        argv = ["medssl", *argv[3:]]
    elif argv[1:2] == ["-m"]:
        argv = ["python", *argv[1:]]
    text = shlex.join(argv)
    return text.replace(str(out), "$OUT").replace(str(scratch), "$SCRATCH")


def safely(section, *a) -> list[str]:
    """A section that cannot be read (a database a killed step left broken) says why instead of losing the rest."""
    try:
        return section(*a)
    except Exception as exc:  # any reader error: reported in the summary, never fatal
        return [f"(could not be read: {type(exc).__name__}: {exc})"]


# -- main ---------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cpus = os.cpu_count() or 2
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="the output folder (default: gpu_check/<UTC time>)")
    p.add_argument("--budget-s", type=float, default=480.0, help="wall-clock seconds for everything (default 480)")
    p.add_argument("--jobs", type=int, default=max(1, min(8, cpus // 2)),
                   help="steps sharing the GPU at once after the bench (default: half the CPUs, at most 8)")
    p.add_argument("--data-dir", type=Path, default=os.environ.get("MEDSSL_DATA"),
                   help="the MedMNIST .npz files (default: $MEDSSL_DATA)")
    p.add_argument("--dry-run", action="store_true", help="on the CPU, every step in its smallest form")
    p.add_argument("--only", help="comma-separated step names or prefixes, e.g. bench,quick-demo,reference")
    p.add_argument("--reference-datasets", help="MedMNIST subsets of the reference (default: its profile's own)")
    p.add_argument("--reference-seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1])
    p.add_argument("--bench-steps", type=int, default=3, help="steps a timed pass of the full grid")
    p.add_argument("--bench-repeats", type=int, default=1, help="timed passes of the full grid after its warm-up "
                   "(the seed-style pipeline at 224 px takes seconds a pass)")
    p.add_argument("--scratch", help="where runs write artifacts and checkpoints (default: a folder in /tmp): "
                   "kept out of --out so that it stays small enough to bring back")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    args.out = args.out or ROOT / "gpu_check" / stamp
    args.data_dir = args.data_dir.resolve() if args.data_dir else None  # the steps run in the checkout's root
    # named, not made: the runs make it when they write (a dry run never does)
    args.scratch = args.scratch or str(Path(tempfile.gettempdir()) / f"medssl_gpu_check_{stamp}")
    return args


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    missing = missing_packages()
    if missing:
        print(f"gpu_check: these packages do not import here: {', '.join(missing)}. Carry the wheels: see "
              "docs/gpu.md.", file=sys.stderr)
        return 2
    out = args.out.resolve()
    threads = max(1, (os.cpu_count() or 2) // max(1, args.jobs))
    env = child_env(args.data_dir, threads)
    info = machine(env)
    problems = [f"machine: {info['error']}"] if "error" in info else []
    if not args.dry_run and not info.get("cuda_available"):
        print(f"gpu_check: torch sees no CUDA device ({info}); on a CPU use --dry-run.", file=sys.stderr)
        return 2
    catalog, catalog_error = None, None
    try:
        catalog = read_catalog(args.data_dir)
    except Exception as exc:  # the bench and the tests still run; the summary says why
        catalog_error = f"{type(exc).__name__}: {exc}"
        problems.append(f"the study catalog did not load: {catalog_error}")
    if catalog is not None and not catalog.shipped:
        problems.append(f"no MedMNIST file found in {args.data_dir or '$MEDSSL_DATA / ~/.medmnist'}")
    planned = plan_steps(args, out, catalog, catalog_error, threads)
    steps = select(planned, args.only)
    if not steps:
        print(f"gpu_check: --only {args.only} names no step; the steps: {', '.join(s.name for s in planned)}",
              file=sys.stderr)
        return 2
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "db").mkdir(exist_ok=True)
    say(f"{len(steps)} steps into {out}; budget {args.budget_s:.0f} s, {args.jobs} jobs")
    runner = Runner(out, env, started + args.budget_s - RESERVE_S)
    try:
        outcomes = run_all(steps, runner, args.budget_s, args.jobs, started)
    except KeyboardInterrupt:  # during the bench: nothing else has started
        runner.stop_all()
        outcomes = [Outcome(s, "skipped", why="skipped: interrupted") for s in steps]
    if runner.interrupted:
        problems.append("interrupted (Ctrl-C or SIGINT)")
    if args.dry_run:
        for o in outcomes:
            if o.step.kind == "pytest" and o.status == "ok":
                o.notes.append("without CUDA every cuda test skips: this proves the collection, not the tests")
    else:
        for o in outcomes:  # on a GPU, a pytest that passed nothing checked nothing
            if o.step.kind == "pytest" and o.status == "ok" and any(n.startswith("tests: 0 passed") for n in o.notes):
                o.status, o.why = "failed", "failed: no cuda test passed"
    summary = write_summary(out, outcomes, info, args, time.monotonic() - started, problems)
    bad = [o.step.name for o in outcomes if o.status in ("failed", "timed out")]
    say(f"summary: {summary}" + (f"; not ok: {', '.join(bad)}" if bad else ""))
    return 1 if bad or problems else 0


if __name__ == "__main__":
    sys.exit(main())
