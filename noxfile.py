"""nox sessions: tests, lint, replicate, paper, bench.

Every session installs medssl with the tested torch/torchvision pair (constraints.txt). Environments are
reused, and the install is skipped when pyproject.toml and constraints.txt are unchanged, so a second call
starts in seconds. The venv backend stays virtualenv: uv does not see the local CPU torch wheel.
"""

import hashlib
from pathlib import Path

import nox

nox.options.default_venv_backend = "virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]

ROOT = Path(__file__).parent
DEPENDENCY_FILES = ("pyproject.toml", "constraints.txt")


def install(session: nox.Session, extras: str = "dev") -> None:
    digest = hashlib.sha256(b"".join((ROOT / f).read_bytes() for f in DEPENDENCY_FILES)).hexdigest()[:16]
    marker = Path(session.virtualenv.location) / f".medssl-installed-{extras}-{digest}"
    if marker.exists():
        return
    session.install("-c", "constraints.txt", "-e", f".[{extras}]")
    # Fail here, not in the middle of a run, if torchvision does not import over this torch.
    session.run("python", "-c", "import medssl_core, torchvision.models; print('torch/torchvision OK')")
    for old in Path(session.virtualenv.location).glob(f".medssl-installed-{extras}-*"):
        old.unlink()
    marker.touch()


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (CPU; the real MedMNIST files tests/conftest.py names; Ray and Optuna from their extras)."""
    install(session, "dev,cluster,tune")
    # two workers with one torch thread each on CI's 2 cores; `nox -s tests -- -m "not slow"` skips the end-to-end
    # study runs for a quick loop while developing
    args = session.posargs or ["-q", "-n", "2", "--durations=15"]
    session.run("pytest", *args, env={"OMP_NUM_THREADS": "1" if "-n" in args else "2"})


@nox.session
def lint(session: nox.Session) -> None:
    install(session)
    session.run("ruff", "check", ".")


@nox.session
def replicate(session: nox.Session) -> None:
    """`nox -s replicate -- STUDY [options]` runs `medssl replicate STUDY [options]`."""
    install(session)
    if not session.posargs:
        session.error("name a study: nox -s replicate -- smalldatassl [--profile quick] (see medssl replicate -h)")
    session.run("medssl", "replicate", *session.posargs)


@nox.session
def paper(session: nox.Session) -> None:
    """`nox -s paper -- [STUDY]` regenerates tables and figures into paper/<study>/."""
    install(session)
    session.run("medssl", "paper", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """`nox -s bench -- [--quick] [medssl bench options]`: pretraining throughput into the 'bench' table."""
    install(session)
    session.run("medssl", "bench", *session.posargs)
