"""End-to-end `synaug run` at CI size on the real shared CIFAR-10 images, plus caching,
leakage and report checks."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from synaug.manifest import Manifest

TINY = {
    "name": "tiny",
    "seed": 0,
    "data": {"dataset": "shared-cifar10", "img_max": 40, "imbalance_factor": 10, "val_per_class": 2,
             "test_per_class": 10},
    "plan": {"mode": "class"},
    "generate": {"backend": "pool", "pool": {"manifest": "heldout", "shift": "synthetic-domain"}},
    "train": {"epochs": 1, "batch_size": 64, "model": {"name": "resnet32", "width": 4},
              "schedule": {"warmup_epochs": 0, "milestones": [], "factors": []}, "progress": False},
    "finetune": {"mode": "finetune", "epochs": 2, "progress": False},
}


def _synaug(*args, cwd=None):
    exe = Path(sys.executable).parent / "synaug"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    cfg = d / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    r = _synaug("run", cfg, "--out", d / "out")
    assert r.returncode == 0, r.stderr[-3000:]
    return d, r


def test_run_writes_everything(tiny_run):
    d, r = tiny_run
    out = d / "out"
    for f in ["config.yaml", "plan.json", "metrics.json", "report.html", "report.md", "data/real.parquet",
              "data/train.parquet", "synthetic/synthetic.parquet", "train/model.safetensors",
              "finetune/model.safetensors", "eval/train/metrics.json", "eval/finetune/metrics.json",
              "eval/finetune/per_class.csv", "plots/counts.png", "plots/samples.png"]:
        assert (out / f).is_file(), f
    s = json.loads((out / "metrics.json").read_text())
    assert set(s["results"]) == {"trained", "finetuned"}
    assert s["final"] == "finetuned"
    # uniformization: every class reaches the head count of the long-tailed set
    assert s["real_train_counts"][0] == 40 and s["real_train_counts"] == sorted(s["real_train_counts"], reverse=True)
    assert s["train_counts_after"] == [40] * 10
    assert s["synthetic"] == 400 - sum(s["real_train_counts"])
    assert "pool:heldout-real+synthetic-domain" in s["generator"]
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "tiny" in html
    res = s["results"]["finetuned"]
    assert 0.0 <= res["top1"] <= 1.0 and set(res["shot"]) >= {"many", "medium", "few", "all"}
    # step 3 kept the encoder: eval-finetune ran only the head, on eval-train's stored features
    assert res["encoder_features"]["reused_from"] == str(out / "eval/train/features.safetensors")
    assert s["results"]["trained"]["encoder_features"]["reused_from"] is None
    # resolved config is complete (defaults filled in) and seeds propagated
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["train"]["optim"]["momentum"] == 0.9 and cfg["generate"]["seed"] == 0


def test_no_test_rows_reach_training(tiny_run):
    d, _ = tiny_run
    out = d / "out"
    train = Manifest.read(out / "data/train.parquet")
    real = Manifest.read(out / "data/real.parquet")
    assert set(train.df["split"]) == {"train", "val"}
    test_paths = set(real.split("test").df["path"])
    assert not test_paths & set(train.df["path"])
    sub = Manifest.read(out / "finetune/finetune_subset.parquet")
    assert set(sub.df["split"]) == {"train"} and set(sub.df["source"]) == {"real"}
    # the pool the generator drew from is disjoint from real train, val and test
    pool = Manifest.read(out / "data/heldout.parquet")
    assert not set(pool.df["path"]) & set(real.df["path"])


def test_rerun_is_cached_and_identical(tiny_run):
    d, _ = tiny_run
    out = d / "out"
    before = json.loads((out / "metrics.json").read_text())
    r = _synaug("run", d / "tiny.yaml", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    for stage in ("data", "plan", "generate", "train", "finetune"):
        assert f"[{stage}] up to date, skipped" in r.stdout
    after = json.loads((out / "metrics.json").read_text())
    assert after["results"] == before["results"]
    # a cached re-run still reports what each stage cost when it ran, and that it ran nothing itself
    assert set(before["timings_s"]) >= {"data", "plan", "generate", "train", "finetune", "eval-finetune"}
    assert after["timings_s"] == before["timings_s"] and before["ran_s"] == before["timings_s"]
    assert after["ran_s"] == {} and "this invocation ran none (all cached)" in (out / "report.md").read_text()


def test_changed_stage_config_reruns_only_downstream(tiny_run, tmp_path):
    d, _ = tiny_run
    cfg = dict(TINY, finetune={**TINY["finetune"], "epochs": 3})
    p = tmp_path / "ft3.yaml"
    p.write_text(yaml.safe_dump(cfg))
    r = _synaug("run", p, "--out", d / "out")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[train] up to date, skipped" in r.stdout
    assert "[finetune] running" in r.stdout


def test_step3_can_start_from_the_last_epoch_instead_of_the_selected_one(tiny_run, tmp_path):
    """``finetune.start: last``: step 3 starts from train/last.json's epoch, not train/model.safetensors;
    the training stays cached, the record and the report say where step 3 started."""
    import torch

    from synaug.train import load_checkpoint
    from synaug.train import checkpoint as ckpt

    d, _ = tiny_run
    out = tmp_path / "out"
    shutil.copytree(d / "out", out)
    assert "start" not in yaml.safe_load((out / "config.yaml").read_text())["finetune"]   # default: not dumped
    last_file = ckpt.resolve_checkpoint(out / "train" / "last.json")
    last = load_checkpoint(last_file)
    with torch.no_grad():                 # make the last epoch differ from the selected model
        for p_ in last.encoder.parameters():
            p_.add_(0.01)
    ckpt.save_model(last, last_file, {k: v for k, v in last.meta.items() if k != "spec"})
    cfg = dict(TINY, finetune={**TINY["finetune"], "start": "last"})
    (tmp_path / "last.yaml").write_text(yaml.safe_dump(cfg))
    r = _synaug("run", tmp_path / "last.yaml", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[train] up to date, skipped" in r.stdout and "[finetune] running" in r.stdout
    ft, sel = load_checkpoint(out / "finetune" / "model.safetensors"), load_checkpoint(out / "train" / "model.safetensors")
    for k, v in ft.encoder.state_dict().items():
        assert torch.equal(v, last.encoder.state_dict()[k]), k
    assert not all(torch.equal(v, sel.encoder.state_dict()[k]) for k, v in ft.encoder.state_dict().items())
    rec = json.loads((out / "finetune" / "finetune.json").read_text())
    assert rec["start"] == {"model": "last", "epoch": last.meta["epoch"]}
    assert f"from the last training epoch ({last.meta['epoch']})" in (out / "report.md").read_text()
    sel_rec = json.loads((d / "out" / "finetune" / "finetune.json").read_text())
    assert sel_rec["start"]["model"] == "selected"


def test_bad_run_config_is_one_line_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({**TINY, "trian": {}}))
    r = _synaug("run", p, "--out", tmp_path / "o")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown key 'trian'" in lines[0]
    assert not (tmp_path / "o").exists()


def test_report_compare(tiny_run, tmp_path):
    d, _ = tiny_run
    shutil.copytree(d / "out", tmp_path / "again")  # two runs of one config: kept apart by folder
    r = _synaug("report", d / "out", tmp_path / "again", "--out", tmp_path / "cmp")
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert md.count("| out | finetuned |") == 1 and md.count("| again | finetuned |") == 1
    r = _synaug("report", tmp_path / "nope")
    assert r.returncode == 2 and "not a finished run folder" in r.stderr


def test_demo_quick(tmp_path):
    """The README's first command at CI size: four runs and a comparison."""
    r = _synaug("demo", "--quick", "--out", tmp_path / "demo")
    assert r.returncode == 0, r.stderr[-3000:]
    gens = {}
    for name in ("ce", "synaug-sd14", "synaug-plus", "synaug-pool"):
        s = json.loads((tmp_path / "demo" / name / "metrics.json").read_text())
        assert np.isfinite(s["results"][s["final"]]["top1"])
        gens[name] = s["generators"]
        assert s["generator"] in (tmp_path / "demo" / name / "report.md").read_text()  # every report names it
    # the main row is made from real Stable Diffusion 1.4 images; the other SYNAuG run from held-out real ones
    assert gens == {"ce": [], "synaug-sd14": ["Stable Diffusion 1.4 (CIFAKE)"],
                    "synaug-plus": ["Stable Diffusion 1.4 (CIFAKE)"], "synaug-pool": ["pool:heldout-real"]}
    syn = Manifest.read(tmp_path / "demo" / "synaug-sd14" / "synthetic" / "synthetic.parquet")
    assert syn.df["source_file"].str.startswith("sd14/").all()
    # the preset row: 10 x the SD 1.4 images in rounds, its first round the main row's images
    plus = Manifest.read(tmp_path / "demo" / "synaug-plus" / "data" / "train.parquet").df
    plus = plus[plus["source"] == "synthetic"]
    assert len(plus) == 10 * len(syn) and sorted(set(plus["select_round"])) == list(range(10))
    assert sorted(plus.loc[plus["select_round"] == 0, "source_file"]) == sorted(syn.df["source_file"])
    cfg = yaml.safe_load((tmp_path / "demo" / "synaug-plus" / "config.yaml").read_text())
    assert cfg["train"]["synthetic"]["batch_share"] == 0.9 and cfg["train"]["synthetic"]["batch_share_end"] == 0.25
    assert cfg["finetune"]["sampling"] == "class_balanced" and cfg["generate"]["select"]["selector"] == "rotate"
    assert cfg["finetune"].get("train_blocks", 0) == 0
    # step 3 of the preset draws from every real training row (the paper row: one balanced subset)
    real = Manifest.read(tmp_path / "demo" / "synaug-plus" / "data" / "train.parquet").df
    real = real[(real["source"] == "real") & (real["split"] == "train")]
    cb = Manifest.read(tmp_path / "demo" / "synaug-plus" / "finetune" / "finetune_subset.parquet").df
    assert sorted(cb["path"]) == sorted(real["path"])
    sub = Manifest.read(tmp_path / "demo" / "synaug-sd14" / "finetune" / "finetune_subset.parquet").df
    assert len(sub) < len(cb) and len(set(sub["label"].value_counts())) == 1
    assert (f"Step 3 (finetune): the head on every real training image ({len(cb)}), drawn class-balanced: "
            f"{len(cb)} draws per epoch" in (tmp_path / "demo" / "synaug-plus" / "report.md").read_text())
    k = int(sub["label"].value_counts().iloc[0])
    assert (f"Step 3 (finetune): the head on a class-balanced subset of the real training images ({k} each, "
            f"{len(sub)} in all)" in (tmp_path / "demo" / "synaug-sd14" / "report.md").read_text())
    assert "synthetic images of synaug-sd14: " in r.stdout and "Stable Diffusion 1.4 images" in r.stdout
    assert f"synthetic images of synaug-plus: {len(plus)} ({len(syn)} per epoch, rotating), from" in r.stdout
    assert f"synthetic images of synaug-sd14: {len(syn)}, from" in r.stdout
    cmp = (tmp_path / "demo" / "comparison.md").read_text()
    assert "Stable Diffusion 1.4" in cmp and "held-out real CIFAR-10" in cmp
