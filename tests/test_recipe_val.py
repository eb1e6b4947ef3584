"""Recipe validation (synaug.experiments.recipe_val): a larger held-out validation set that ranks
finished runs, disjoint from everything a run trained on, the same for every row of a seed."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from synaug.errors import SynaugError
from synaug.experiments import recipe_val as rv
from synaug.manifest import Manifest

BASE = {
    "seed": 3,
    "data": {"dataset": "shared-cifar10", "img_max": 30, "imbalance_factor": 10, "val_per_class": 2,
             "test_per_class": 5},
    "train": {"epochs": 1, "batch_size": 64, "model": {"name": "resnet32", "width": 4},
              "schedule": {"warmup_epochs": 0, "milestones": [], "factors": []}, "progress": False},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    from synaug.run import load_run_config, run

    d = tmp_path_factory.mktemp("rv")
    ce = dict(copy.deepcopy(BASE), name="ce", plan=None, generate=None, finetune=None)
    ref = dict(copy.deepcopy(BASE), name="ref", plan={"mode": "class"},
               generate={"backend": "pool", "pool": {"manifest": "heldout"}},
               finetune={"mode": "finetune", "epochs": 1, "progress": False})
    for cfg in (ce, ref):
        run(load_run_config(None, base=cfg), d / cfg["name"], log=lambda *a, **k: None)
    return d


def test_draw_is_seeded_balanced_and_checked(runs):
    held = Manifest.read(runs / "ce" / "data" / "heldout.parquet")
    a, b, c = rv.draw(held, 7, 0), rv.draw(held, 7, 0), rv.draw(held, 7, 1)
    assert list(a.class_counts(None)) == [7] * 10 and set(a.df["split"]) == {"val"}
    assert rv.digest(a) == rv.digest(b) and rv.digest(a) != rv.digest(c)
    assert set(a.df["path"]) <= set(held.df["path"])
    real = Manifest.read(runs / "ce" / "data" / "real.parquet")      # train, val and test rows of the run
    assert not set(a.df["path"]) & set(real.df["path"])
    with pytest.raises(SynaugError, match="class 'airplane' has 3 held-out images, 7 needed"):
        lab = held.df["label"].to_numpy()
        rv.draw(held.select((lab != 0) | (np.cumsum(lab == 0) <= 3)), 7, 0)


def test_score_is_the_final_models_accuracy_on_the_set_and_cached(runs):
    from synaug.train import evaluate, load_checkpoint

    got = rv.score(runs / "ce", per_class=20)
    rows = rv.draw(Manifest.read(runs / "ce" / "data" / "heldout.parquet"), 20, 3)   # the run's seed
    want = evaluate(load_checkpoint(runs / "ce" / "train" / "model.safetensors"), rows)
    assert got["mean_class"] == pytest.approx(100 * want["mean_class_accuracy"], abs=1e-3)
    assert got["n"] == 200 and got["set"] == rv.digest(rows)
    f = runs / "ce" / rv.FOLDER / "result.json"
    stamp = f.stat().st_mtime_ns
    assert rv.score(runs / "ce", per_class=20) == got and f.stat().st_mtime_ns == stamp   # cached
    assert rv.score(runs / "ce", per_class=21)["n"] == 210                                  # a new set: recomputed
    assert rv.final_model(runs / "ref") == runs / "ref" / "finetune" / "model.safetensors"


def test_a_run_that_trained_on_the_pool_gets_no_score(runs):
    used = rv.used_paths(runs / "ref")
    train = Manifest.read(runs / "ref" / "data" / "train.parquet").df
    syn = train[train["source"] == "synthetic"]
    assert len(syn) and set(syn["source_file"]) <= used          # the pool image behind each synthetic row
    assert not set(syn["path"]) & used                            # not the generated file's own path
    got = rv.score(runs / "ref", per_class=100)
    assert got["overlap"] > 0 and "mean_class" not in got
    # the same images as any other run of this seed: rows are paired
    assert got["set"] == rv.score(runs / "ce", per_class=100)["set"]


def test_score_refuses_a_run_without_pool_or_model(tmp_path, runs):
    import shutil

    d = tmp_path / "x"
    shutil.copytree(runs / "ce", d)
    (d / "train" / "model.safetensors").unlink()
    with pytest.raises(SynaugError, match="no trained model"):
        rv.score(d)
    (d / "data" / "heldout.parquet").unlink()
    with pytest.raises(SynaugError, match=r"no held-out real images \(data/heldout.parquet\)"):
        rv.score(d)


def test_demo_rows_choose_on_recipe_validation_and_check_pairing():
    from synaug.experiments import demo_rows as dr

    def row(t, r, s="a"):
        return {"top1": t, "rval": r, "rval_set": s}

    got = {"synaug-sd14": {0: row(40, 40), 1: row(42, 41)}, "synaug-plus": {0: row(44, 42), 1: row(44, 42)},
           "sd14+x": {0: row(50, 41.5), 1: row(50, 41.5)}}     # best on test, not on recipe validation
    assert dr.choice(got, [0, 1], ["sd14+x"]) == "synaug-plus"
    got["sd14+x"][1]["rval"] = 44.0
    assert dr.choice(got, [0, 1], ["sd14+x"]) == "sd14+x"
    dr.check_paired(got, [0, 1])
    got["sd14+x"][1]["rval_set"] = "b"
    with pytest.raises(SynaugError, match="seed 1: the rows' recipe-validation sets differ"):
        dr.check_paired(got, [0, 1])
    line = dr.agreement({n: {s: {**v, "val": 50.0 - v["top1"]} for s, v in g.items()} for n, g in got.items()}, [0, 1])
    t = [40, 42, 44, 44, 50, 50]
    r_rv = np.corrcoef(t, [40, 41, 42, 42, 41.5, 44.0])[0, 1]
    assert f"over the table's 6 synthetic runs (rows x seeds): recipe validation r = {r_rv:.2f}" in line
    assert "own validation split r = -1.00" in line                     # val = 50 - top1: perfectly reversed
    got["synaug-plus"] = {s: row(44, float("nan"), None) for s in (0, 1)}
    assert dr.choice(got, [0, 1], ["sd14+x"]) is None


def test_gap_collect_reads_the_rule_score(runs):
    from synaug.experiments import gap

    r = rv.fields(runs / "ce")
    assert gap.RULE in r and r["n_rval"] == 2000 and r[gap.RULE] == json.loads(
        (runs / "ce" / rv.FOLDER / "result.json").read_text())["result"]["mean_class"]
    assert r["rval_set"] == rv.fields(runs / "ref")["rval_set"]
    assert np.isnan(rv.fields(runs / "ref")[gap.RULE])
