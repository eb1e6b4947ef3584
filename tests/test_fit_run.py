"""The ``fit:`` stage of ``synaug run`` end to end at CI size (real CIFAR-10 images, tiny random
pipeline): the Table 5 class-fitting config runs with only sizes and the model swapped; no
validation or test image reaches a fit (every image a fit decodes is recorded); the stage is
cached like the others and a changed fit redoes fit, generation and training."""
from __future__ import annotations

from pathlib import Path

import pytest

from synaug.errors import SynaugError
from synaug.generate.fit import AdapterSet
from synaug.generate.fit import data as fit_data
from synaug.generate.tiny import build_tiny_sd
from synaug.manifest import Manifest
from synaug.plan import Plan
from synaug.run import load_run_config, run

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
TABLE5 = ROOT / "configs" / "table5-cifar100lt-class-fitting.yaml"

SMALL = ["data.dataset=shared-cifar10", "data.root=null", "data.img_max=6", "data.imbalance_factor=3",
         "data.val_per_class=1", "data.test_per_class=3", "generate.dtype=fp32", "generate.steps=2",
         "generate.batch_size=8", "train.epochs=1", "train.batch_size=64", "train.model.width=4",
         "train.progress=false", "train.schedule.warmup_epochs=0", "train.schedule.milestones=[]",
         "train.schedule.factors=[]", "finetune.epochs=1", "finetune.progress=false", "eval.device=cpu"]


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("m") / "tiny-sd", seed=0)


def _resolved(paths) -> set[str]:
    return {str(Path(p).resolve()) for p in paths}


@pytest.mark.slow
def test_table5_class_fitting_config_runs_end_to_end_and_fits_on_train_rows_only(sd, tmp_path, monkeypatch):
    seen: list[str] = []
    load = fit_data.load_image

    def spy(path, size):
        seen.append(str(Path(path).resolve()))
        return load(path, size)

    monkeypatch.setattr(fit_data, "load_image", spy)
    cfg = load_run_config(TABLE5, SMALL + [f"generate.model={sd}", "fit.steps=2", "fit.resolution=32",
                                           "fit.num_class_images=1", "fit.prior_steps=1", "fit.mixed_precision=auto"])
    assert (cfg.fit.method, cfg.fit.per, cfg.fit.prior_preservation) == ("dreambooth_lora", "class", True)
    out = tmp_path / "run"
    s = run(cfg, out, log=lambda *_: None)

    real = Manifest.read(out / "data" / "real.parquet")
    train, val, test = (_resolved(real.split(x).abspaths()) for x in ("train", "val", "test"))
    assert val and test
    fit_dir = (out / "fit").resolve()
    prior = {p for p in seen if p.startswith(str(fit_dir))}
    real_seen = set(seen) - prior
    # the fits decoded real training images, never a validation or test image
    assert real_seen and real_seen <= train and not real_seen & (val | test)
    assert prior and all("/prior/" in p for p in prior)  # the other images are the base model's class images
    plan = Plan.read(out / "plan.json")
    need = {c.class_name for c in plan.cells if c.synthetic > 0}
    a = AdapterSet.read(out / "fit")
    assert set(a.classes) == need and len(need) == 9
    for c in need:  # each adapter learned from all (and only) the real training images of its class
        used = Manifest.read(a.entry(c).path.parent / "images.parquet")
        assert _resolved(used.abspaths()) == _resolved(real.select(((real.df["class_name"] == c)
                                                                     & (real.df["split"] == "train")).to_numpy())
                                                         .abspaths())
    syn = Manifest.read(out / "synthetic" / "synthetic.parquet")
    assert s["generators"] == ["txt2img:tiny-sd+dreambooth_lora-per-class"]
    assert syn.df["prompt"].str.contains(" sks ").all()
    assert all(r.adapter == str(a.entry(r.class_name).path) and r.adapter_sha256 == a.entry(r.class_name).sha256
               for r in syn.df.itertuples())
    assert "finetuned" in s["results"]


def _tiny(sd) -> dict:
    return {"name": "fit-tiny", "seed": 0,
            "data": {"dataset": "shared-cifar10", "img_max": 5, "imbalance_factor": 2.5, "test_per_class": 2},
            "plan": {"mode": "class"},
            "fit": {"method": "lora", "steps": 2, "lr": 1e-2},
            "generate": {"backend": "txt2img", "model": str(sd), "steps": 2, "batch_size": 8, "modifiers": "none"},
            "train": {"epochs": 1, "batch_size": 64, "model": {"width": 4}, "progress": False,
                      "schedule": {"warmup_epochs": 0, "milestones": [], "factors": []}},
            "eval": {"device": "cpu"}}


def test_fit_stage_is_cached_and_a_changed_fit_redoes_what_follows(sd, tmp_path):
    out = tmp_path / "run"
    run(load_run_config(None, base=_tiny(sd)), out, log=lambda *_: None)
    logs: list[str] = []
    run(load_run_config(None, base=_tiny(sd)), out, log=logs.append)
    for stage in ("fit", "generate", "train"):
        assert f"[{stage}] up to date, skipped" in logs
    before = AdapterSet.read(out / "fit").entry("truck").sha256
    logs.clear()
    run(load_run_config(None, base=_tiny(sd), overrides=["fit.steps=3"]), out, log=logs.append)
    text = "\n".join(logs)
    assert "[fit] running (the adapters in" in text and "fitted with other steps; fitting again" in text
    assert "[generate] running" in text and "[train] running" in text
    assert AdapterSet.read(out / "fit").entry("truck").sha256 != before
    syn = Manifest.read(out / "synthetic" / "synthetic.parquet")
    assert set(syn.df["adapter_sha256"]) == {AdapterSet.read(out / "fit").entry(c).sha256
                                             for c in set(syn.df["class_name"])}


@pytest.mark.parametrize("change, message", [
    ({"generate": {"backend": "pool", "pool": {"manifest": "heldout"}}}, "fitted adapters are for a diffusion model"),
    ({"generate": {"adapters": "/somewhere"}}, "give either a fit section or generate.adapters"),
    ({"fit": {"model": "other/model"}}, "fit.model 'other/model' differs from generate.model"),
    ({"fit": {"template": "a {modifier} photo of {class}"}}, "uses {modifier}, which real images do not carry"),
])
def test_run_refuses_a_fit_that_cannot_work_before_any_stage(sd, tmp_path, change, message):
    from synaug.runconfig import deep_merge

    base = deep_merge(_tiny(sd), change)
    if "pool" in str(change):
        base["data"]["imbalance_factor"] = 2.5
    out = tmp_path / "run"
    with pytest.raises(SynaugError, match=message):
        run(load_run_config(None, base=base), out, log=lambda *_: None)
    assert not out.exists()  # refused before anything was written
