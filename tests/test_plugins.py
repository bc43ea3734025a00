"""Methods from outside medssl: a package installed with an entry point runs in the studies without any edit of
medssl_core, its runs' identity follows its code, and the report shows it across studies."""

from __future__ import annotations

import sys

import pytest

from medssl_core import api
from medssl_core.common.errors import ConfigError
from medssl_core.methods import METHODS
from medssl_core.plan import plugins
from medssl_core.plan.catalog import get_study

PACKAGE = '''"""A user's own SSL method, outside medssl."""
import torch.nn.functional as F
from torch import Tensor

from medssl_core.methods import Method, StepOutput, register
from medssl_core.plan.study import Method as Declaration


def hinge_alignment(z0: Tensor, z1: Tensor, margin: float = 0.5) -> Tensor:
    return F.relu(margin - F.cosine_similarity(z0, z1)).mean()


@register("hinge")
class Hinge(Method):
    loss = staticmethod(hinge_alignment)

    def training_step(self, views, batch) -> StepOutput:
        z0, z1 = (self.embed(v.image)[1] for v in views)
        return StepOutput(self.loss(z0, z1, **self.loss_kwargs))


METHOD = Declaration("hinge", "Hinge (plug-in)", {"name": "hinge", "loss_kwargs": {"margin": 0.5},
                                                   "projector": [64, 32]})
'''


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """The package 'medssl_hinge' as pip would leave it: its module and a dist-info with the entry point."""
    site = tmp_path / "site"
    (site / "medssl_hinge").mkdir(parents=True)
    (site / "medssl_hinge" / "__init__.py").write_text(PACKAGE)
    info = site / "medssl_hinge-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: medssl-hinge\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[medssl.methods]\nhinge = medssl_hinge:METHOD\n")
    monkeypatch.syspath_prepend(str(site))
    plugins.plugin_methods.cache_clear()
    yield site
    plugins.plugin_methods.cache_clear()
    METHODS.pop("hinge", None)
    sys.modules.pop("medssl_hinge", None)


def test_an_installed_method_runs_in_two_studies_and_the_report_shows_it(installed, tmp_path, medmnist_dir):
    demo, medmnist = get_study("demo"), get_study("medmnist_ssl")
    assert "hinge" in demo.guests and "hinge" in medmnist.guests
    assert "hinge" not in demo.default_methods  # a guest runs when named, never by default
    db, said = tmp_path / "r.duckdb", []
    common = {"db": db, "data_dir": str(medmnist_dir), "methods": ["hinge"], "protocols": ["knn"], "seeds": [0],
              "device": "cpu", "progress": False, "say": said.append}
    runs = [api.replicate("demo", **common),
            api.replicate("medmnist_ssl", "quick", datasets=["breastmnist"], variants=["as_published"], **common)]
    for run in runs:
        assert run.ran == len(run.plan.specs) >= 2 and not run.failed, [r.run["error"] for r in run.failed]
        pretraining = next(s for s in run.plan.specs if s.kind == "pretrain")
        # its identity follows the plug-in's code: the class and the loss it uses, from the user's package
        assert {"Hinge", "hinge_alignment"} <= set(pretraining.code) and "nt_xent" not in pretraining.code
    out = api.paper(db=db, out=tmp_path / "paper", report=True, data_dir=str(medmnist_dir))
    assert set(out.written) == {"demo", "medmnist_ssl"}
    report = (tmp_path / "paper" / "REPORT.md").read_text()
    cross = report.split("## Methods across studies")[1].split("\n## ")[0]
    rows = [line for line in cross.splitlines() if "hinge" in line.lower()]
    assert {r.split(" | ")[1] for r in rows} == {"demo", "medmnist_ssl"}, cross
    assert "Hinge (plug-in)" in (tmp_path / "paper" / "medmnist_ssl" / "quick" / "main_as_published.md").read_text()


def test_a_broken_plug_in_names_itself(installed, monkeypatch):
    (installed / "medssl_hinge-0.1.dist-info" / "entry_points.txt").write_text(
        "[medssl.methods]\nhinge = medssl_hinge:NO_SUCH\n")
    with pytest.raises(ConfigError, match=r"medssl\.methods entry point hinge = medssl_hinge:NO_SUCH does not load"):
        plugins.plugin_methods()
