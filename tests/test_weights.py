"""ImageNet weights: `medssl weights` fetches exactly what a plan needs (hashes checked), and stand-in weights let
a cheap profile run every option on a machine without them, as runs of their own."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch

from medssl_core import api
from medssl_core.common.errors import ConfigError
from medssl_core.execute.local import with_weights
from medssl_core.models import build_backbone, imagenet_weights_path
from medssl_core.models.stand_in import make_stand_in, stand_in_caches, stand_in_root
from medssl_core.models.vit import VIT_SMALL_IMAGENET
from medssl_core.models.weights_fetch import WeightsFetchError
from medssl_core.plan.catalog import get_study
from medssl_core.plan.grid import expand
from medssl_core.run.record import run_row
from medssl_core.store.records import RunRecord


def _stand_in(spec) -> bool:
    return spec.hparams["backbone"].get("stand_in_weights", False)


def test_stand_in_weights_plan_every_option_of_medsgssl_quick_as_runs_of_their_own(medmnist_dir):
    study = get_study("medsgssl")
    real = expand(study, "quick", data_dir=medmnist_dir, allow_download=False)
    assert sorted(what for what, why in real.skipped if "ImageNet weights" in why) == sorted(
        f"smoke_pneumonia/{m}" for m in ("option4", "option6", "option7", "option8", "option10", "direct",
                                         "direct_mask"))
    # planning only, as `medssl paper` plans (no data fingerprint), on this machine without weights
    plan = expand(study, "quick", data_dir=medmnist_dir, allow_download=False, fingerprint_data=False,
                  stand_in_weights=True)
    assert plan.skipped == []
    profile = study.profile("quick")
    assert {s.method for s in plan.specs} == set(profile.methods)
    assert plan.stand_in_weights == plan.weights == {("mobilenet_v2", "imagenet"), ("resnet50", "imagenet"),
                                                      ("vit_small", "imagenet")}
    for spec in plan.specs:  # exactly the ImageNet-initialised runs say so, and their labels too
        assert _stand_in(spec) == (spec.hparams["backbone"]["init"] != "random"), spec.label()
        assert ("[stand-in weights]" in spec.label()) == _stand_in(spec)
    without = {s.config_id for s in expand(study, "quick", data_dir=medmnist_dir, allow_download=False,
                                           fingerprint_data=False).specs}
    stand_ins = {s.config_id for s in plan.specs if _stand_in(s)}
    assert stand_ins and not stand_ins & without  # never one cell with runs on real weights
    with pytest.raises(ConfigError, match=r"paper.*real weights"):
        expand(study, "paper", fingerprint_data=False, every_source=True, stand_in_weights=True)


def test_stand_ins_replace_only_the_missing_weights(medmnist_dir):
    real = Path(torch.hub.get_dir()) / "checkpoints" / "mobilenet_v2-b0353104.pth"
    real.parent.mkdir(parents=True)
    real.write_bytes(b"stands for the real file")
    plan = expand(get_study("medsgssl"), "quick", data_dir=medmnist_dir, allow_download=False,
                  fingerprint_data=False, stand_in_weights=True)
    assert ("mobilenet_v2", "imagenet") not in plan.stand_in_weights
    assert not any(_stand_in(s) for s in plan.specs if s.hparams["backbone"]["arch"] == "mobilenet_v2")


def test_a_stand_in_run_builds_its_backbone_from_the_stand_in_file():
    with pytest.raises(ConfigError, match="not present locally"):
        build_backbone("resnet18", 3, init="imagenet")
    path = make_stand_in("resnet18", "imagenet")
    assert path.is_relative_to(stand_in_root()) and not path.is_relative_to(torch.hub.get_dir())
    assert imagenet_weights_path("resnet18") is None  # the real cache is left alone
    with stand_in_caches("resnet18", "imagenet"):
        model = build_backbone("resnet18", 3, init="imagenet")
    saved = torch.load(path, weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert imagenet_weights_path("resnet18") is None  # the caches are the user's again
    first = path.read_bytes()
    path.unlink()
    assert make_stand_in("resnet18", "imagenet").read_bytes() == first  # the same stand-in on every machine


def test_the_runner_sees_the_stand_in_only_for_a_run_that_asks_for_it(medmnist_dir):
    plan = expand(get_study("medsgssl"), "quick", data_dir=medmnist_dir, allow_download=False,
                  fingerprint_data=False, stand_in_weights=True, methods=["option4", "option1"])
    seen = {}

    def runner(spec, ctx):
        b = spec.hparams["backbone"]
        seen[spec.method] = imagenet_weights_path(b["arch"], b["init"]) if b["init"] != "random" else None
        return RunRecord(run_row(spec, "ok", None, datetime.now(timezone.utc)))

    for spec in plan.pretrain:
        with_weights(runner, spec, None)
    assert seen["option4"] is not None and seen["option4"].is_relative_to(stand_in_root())
    assert seen["option1"] is None


def _fake_loaders(monkeypatch) -> list[str]:
    """torchvision's and timm's loaders, writing a file where theirs would: the names they were asked for."""
    import timm
    import torchvision.models

    asked: list[str] = []

    class FakeWeights:
        def __init__(self, name):
            self.name = name

        def get_state_dict(self, progress=True, check_hash=False):
            assert check_hash
            asked.append(self.name)
            from medssl_core.models.imagenet import _imagenet_file
            from medssl_core.models.weights_fetch import TORCHVISION_WEIGHTS

            (arch, init), = [k for k, v in TORCHVISION_WEIGHTS.items() if v == self.name]
            path = Path(torch.hub.get_dir()) / "checkpoints" / _imagenet_file(arch, init)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"weights")

    def create_model(name, pretrained=False, **kwargs):
        assert pretrained
        asked.append(name)
        repo = f"models--{VIT_SMALL_IMAGENET.replace('/', '--')}"
        path = Path.home() / ".cache" / "huggingface" / "hub" / repo / "snapshots" / "abc" / "model.safetensors"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"weights")

    monkeypatch.setattr(torchvision.models, "get_weight", FakeWeights)
    monkeypatch.setattr(timm, "create_model", create_model)
    return asked


def test_weights_fetch_asks_for_exactly_the_weights_the_plan_needs(monkeypatch):
    asked = _fake_loaders(monkeypatch)
    before = api.weights("medsgssl", "quick")
    assert set(before.missing) == {("mobilenet_v2", "imagenet"), ("resnet50", "imagenet"), ("vit_small", "imagenet")}
    fetched = api.weights("medsgssl", "quick", fetch=True, say=lambda m: None)
    assert sorted(asked) == sorted(["MobileNet_V2_Weights.IMAGENET1K_V1", "ResNet50_Weights.IMAGENET1K_V1",
                                    VIT_SMALL_IMAGENET.split("/")[1]])
    assert fetched.missing == [] and all(p.is_file() for p in fetched.files.values())
    asked.clear()
    api.weights("medsgssl", "quick", fetch=True)
    assert asked == []  # present: nothing downloaded twice
    assert api.weights("demo", "quick").files == {}  # random inits only


def test_a_download_that_does_not_match_torchvisions_hash_is_a_clear_error_and_not_kept(http_server, monkeypatch):
    import torchvision.models

    from medssl_core.models.weights_fetch import fetch_imagenet

    root, url = http_server
    name = "resnet18-f37072fd.pth"  # the hash prefix torchvision checks the file's SHA-256 against
    (root / name).write_bytes(b"not the weights")

    class ServedWeights:  # torchvision's own download and hash check, from the local server
        def __init__(self, weights_name):
            assert weights_name == "ResNet18_Weights.IMAGENET1K_V1"

        def get_state_dict(self, progress=True, check_hash=False):
            return torch.hub.load_state_dict_from_url(f"{url}/{name}", progress=False, check_hash=check_hash)

    monkeypatch.setattr(torchvision.models, "get_weight", ServedWeights)
    with pytest.raises(WeightsFetchError, match="do not match torchvision's published hash"):
        fetch_imagenet("resnet18", "imagenet")
    assert imagenet_weights_path("resnet18") is None
    assert not list((Path(torch.hub.get_dir()) / "checkpoints").glob("*"))


def test_the_commands_list_the_needed_weights_and_refuse_stand_ins_for_the_paper_profile(tmp_path, capsys):
    from medssl_core.cli import main

    assert main(["weights", "list", "medsgssl", "--profile", "quick"]) == 1  # some are missing
    out = capsys.readouterr()
    assert [line.split()[:3] for line in out.out.splitlines()[3:]] == [
        ["mobilenet_v2", "imagenet", "missing"], ["resnet50", "imagenet", "missing"],
        ["vit_small", "imagenet", "missing"]]
    assert "medssl weights fetch medsgssl --profile quick" in out.err
    assert main(["weights", "list", "demo", "--profile", "quick"]) == 0
    assert "every run starts from a random init" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"Drop --stand-in-weights"):
        api.replicate("medsgssl", "paper", allow_slow=True, stand_in_weights=True, dry_run=True,
                      db=tmp_path / "r.duckdb", say=lambda m: None)


def test_a_stand_in_vit_small_is_timms_safetensors_file_and_loads_as_the_real_one_would():
    from safetensors.torch import load_file

    with stand_in_caches("vit_small", "imagenet") as path:
        assert imagenet_weights_path("vit_small") == path and path.suffix == ".safetensors"
        model = build_backbone("vit_small", 1, init="imagenet", image_size=32)  # 1 channel: timm adapts the stem
    saved = load_file(path)
    assert torch.equal(model.vit.blocks[3].attn.qkv.weight, saved["blocks.3.attn.qkv.weight"])
    assert torch.allclose(model.vit.patch_embed.proj.weight, saved["patch_embed.proj.weight"].sum(1, keepdim=True))
    assert imagenet_weights_path("vit_small") is None
