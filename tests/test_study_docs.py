"""Each study's source notes live in the project (docs/studies/<name>.md), `medssl study show` names them, and the
code cites them, never notes outside the checkout (../shared/...), which a clone does not have."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medssl_core.cli import main
from medssl_core.plan.catalog import studies
from medssl_core.plan.study import STUDY_NOTES, describe, source_notes

ROOT = Path(__file__).resolve().parents[1]
NOTES = ROOT / "docs" / "studies"
CITING = ("medssl_core", "replications", "benchmarks", "tests")
# ../shared/data/... is data (the CI layout holds the MedMNIST files there), not a citation
OUTSIDE = re.compile(r"\.\./shared(?!/data/)|(?<!docs/studies/)\b(?:studies|references)\.md")
# a pointer into the notes: docs/studies/<name>.md, optionally followed by the quoted heading of a section
POINTER = re.compile(r"docs/studies/(\w+)\.md(?:,\s+'([^'\n]+)')?")
STUDIES = sorted(name for name in studies() if name != "demo")


def _sources() -> list[Path]:
    return [p for d in CITING for p in sorted((ROOT / d).rglob("*.py")) if p.resolve() != Path(__file__).resolve()]


def _headings(path: Path) -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^#+\s+(.+)$", path.read_text(encoding="utf-8"), re.M)}


def test_notes_are_found_where_the_studies_are():
    assert STUDY_NOTES == NOTES


@pytest.mark.parametrize("name", STUDIES)
def test_every_study_has_its_source_notes(name):
    path = NOTES / f"{name}.md"
    assert path.is_file(), f"{name}: no source notes at docs/studies/{name}.md"
    headings = _headings(path)
    for section in ("Source", "Reported numbers", "Decisions", "Open questions"):
        assert section in headings, f"docs/studies/{name}.md has no section '{section}'"
    study = studies()[name]
    assert source_notes(study) == f"docs/studies/{name}.md"
    assert f"Source notes: docs/studies/{name}.md" in describe(study)


def test_every_decision_is_in_its_notes():
    for name in STUDIES:
        text = (NOTES / f"{name}.md").read_text(encoding="utf-8")
        missing = [d.name for d in studies()[name].decisions if f"`{d.name}`" not in text]
        assert not missing, f"docs/studies/{name}.md does not discuss decisions {missing}"


def test_study_show_names_the_notes(capsys):
    assert main(["study", "show", "medsgssl"]) == 0
    assert "Source notes: docs/studies/medsgssl.md" in capsys.readouterr().out


def test_a_study_without_notes_names_none():
    demo = studies()["demo"]
    assert (source_notes(demo) is None) == (not (NOTES / "demo.md").is_file())
    assert ("Source notes:" in describe(demo)) == (source_notes(demo) is not None)


def test_no_code_cites_notes_outside_the_project():
    found = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in _sources()
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if OUTSIDE.search(line)]
    assert not found, "cite docs/studies/<study>.md instead:\n" + "\n".join(found)


def test_every_pointer_into_the_notes_resolves():
    """A cited file exists, and a quoted section is one of its headings."""
    broken = []
    for p in _sources():
        for m in POINTER.finditer(p.read_text(encoding="utf-8")):
            doc = NOTES / f"{m.group(1)}.md"
            if not doc.is_file() or (m.group(2) and m.group(2) not in _headings(doc)):
                broken.append(f"{p.relative_to(ROOT)}: {m.group(0)}")
    assert not broken, "pointers to missing notes or sections:\n" + "\n".join(broken)
