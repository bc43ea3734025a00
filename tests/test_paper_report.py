"""`medssl paper --all`'s cross-study report: reported vs reproduced with each number's run ids, what could not run
here and why, a self-contained sortable HTML with its figures inline."""

from __future__ import annotations

import re

from medssl_core.paper.generate import generate
from medssl_core.paper.report import write_report
from medssl_core.plan.catalog import get_study
from medssl_core.plan.grid import expand
from medssl_core.store import run_sql
from tests.conftest import cpu_store, execute_cleanly


def test_report_covers_every_study_with_run_ids_and_what_did_not_run(tmp_path, medmnist_dir):
    demo = get_study("demo")
    store, ctx = cpu_store(tmp_path, medmnist_dir)
    execute_cleanly(expand(demo, "quick", data_dir=medmnist_dir, seeds=[0]), store, ctx)
    out = tmp_path / "paper"
    generate(demo, store.db_path, out / "demo", data_dir=medmnist_dir, tsne=False)
    md_path, html_path = write_report(out, {"demo": demo, "medsgssl": get_study("medsgssl")}, store.db_path,
                                      medmnist_dir)
    md, page = md_path.read_text(), html_path.read_text()
    linear = run_sql(store.db_path, "SELECT run_id, value FROM run_metrics WHERE method = 'simclr' AND protocol = "
                                    "'linear' AND split = 'test' AND metric = 'accuracy'")[1]
    (run_id, accuracy), = linear
    row = next(line for line in md.splitlines() if run_id in line)  # the number sits beside its run id
    assert f"{accuracy * 100:.2f} (n=1)" in row and "| linear |" in row
    assert "no runs in this database; 3 profiles" in md  # medsgssl: nothing ran here ...
    assert "- profile paper: no runs in this database (sized for a GPU); `medssl replicate medsgssl --profile " \
           "paper` runs it" in md
    assert "(nih; profiles paper, tiny): needs `NIH_ChestXray14/` (Download the NIH" in md  # ... what is missing
    assert f"<td class=ids>{run_id}</td>" in page and "<table class=sortable>" in page
    # self-contained: figures inline, nothing fetched (links in the text are fine)
    assert page.count("data:image/png;base64,") >= 1 and not re.search(r"(src|href)=\"https?:|<link", page)
