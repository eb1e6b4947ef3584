"""Selection from a larger candidate set (generate.select): the selectors' rules, the candidate
pool as an extension of today's draw, the candidates -> scorer -> select stages of ``synaug run``
end to end on tiny data, and the two-round loop resuming after a kill."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from synaug.errors import SynaugError
from synaug.generate import GenerateConfig, generate
from synaug.generate.config import SelectConfig
from synaug.generate.candidates import candidate_plan, first_rows
from synaug.generate.select import k_center, select_cell, typicality
from synaug.manifest import Manifest
from synaug.plan import Cell, Plan
from synaug.train.toydata import make_toy_manifest

pytestmark = pytest.mark.usefixtures("one_thread")
SYNAUG = Path(sys.executable).parent / "synaug"


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ---------------------------------------------------------------------------- the selectors' rules
def test_confidence_keeps_what_it_says():
    rng = np.random.default_rng(0)
    prob = np.log(rng.uniform(0.01, 1, 40))
    rank = np.argsort(np.argsort(prob))                      # 0 = least confident
    sel = lambda **kw: select_cell(SelectConfig(candidates=4, selector="confidence", **kw), 10, prob, None,  # noqa: E731
                                   None, np.random.default_rng(1))[0]
    most, least, middle = sel(keep="most"), sel(keep="least"), sel(keep="middle")
    assert sorted(rank[most]) == list(range(30, 40))
    assert sorted(rank[least]) == list(range(10))
    assert sorted(rank[middle]) == list(range(15, 25))          # the uncertain middle of the ranking
    rand = select_cell(SelectConfig(candidates=4), 10, prob, None, None, np.random.default_rng(1))[0]
    assert len(set(rand)) == 10 and set(rand) != set(most) and set(rand) != set(middle)


def test_typicality_keeps_the_candidates_nearest_the_real_class():
    rng = np.random.default_rng(0)
    real = _unit(rng.normal(size=(8, 5)) + np.array([3.0, 0, 0, 0, 0]))
    feats = _unit(rng.normal(size=(30, 5)) + rng.uniform(0, 3, (30, 1)) * np.array([1.0, 0, 0, 0, 0]))
    kept, score = select_cell(SelectConfig(candidates=3, selector="typicality"), 10, None, feats, real,
                              np.random.default_rng(0))
    rejected = np.setdiff1d(np.arange(30), kept)
    assert score[kept].min() >= score[rejected].max()
    assert np.allclose(score, feats @ (real.mean(0) / np.linalg.norm(real.mean(0))))
    knn = typicality(feats, real, knn=2)
    assert np.allclose(knn, np.sort(feats @ real.T, 1)[:, -2:].mean(1))


def test_diversity_covers_and_drops_near_duplicates():
    rng = np.random.default_rng(0)
    base = _unit(rng.normal(size=(6, 8)))
    dup = _unit(np.repeat(base[:1], 20, 0) + 1e-4 * rng.normal(size=(20, 8)))  # 20 near-copies of one image
    feats = np.vstack([dup, base[1:]])
    kept, score = select_cell(SelectConfig(candidates=4, selector="diversity"), 6, None, feats, None,
                              np.random.default_rng(0))
    assert (kept < 20).sum() == 1                                 # one of the near-duplicates, not several
    assert set(range(20, 25)) <= set(kept)
    d = 1 - feats[kept] @ feats[kept].T
    np.fill_diagonal(d, np.inf)
    for seed in range(5):                                         # farther apart than random picks
        r = np.random.default_rng(seed).choice(len(feats), 6, replace=False)
        dr = 1 - feats[r] @ feats[r].T
        np.fill_diagonal(dr, np.inf)
        assert d.min() >= dr.min()
    assert np.allclose(score[kept], d.min(1))
    order = k_center(feats, 3)
    assert len(set(order)) == 3


def test_typical_diverse_picks_inside_the_typical_share():
    rng = np.random.default_rng(1)
    real = _unit(rng.normal(size=(5, 6)))
    feats = _unit(rng.normal(size=(40, 6)))
    sel = SelectConfig(candidates=4, selector="typical-diverse", typical_share=0.5)
    kept, score = select_cell(sel, 10, None, feats, real, np.random.default_rng(0))
    top = np.argsort(-score, kind="stable")[:20]
    assert set(kept) <= set(top) and len(kept) == 10
    assert set(kept) != set(top[:10])                              # not merely the 10 most typical


def test_select_config_rules():
    assert not SelectConfig().active and SelectConfig(candidates=2).active
    assert not SelectConfig(candidates=2).needs_scorer
    with pytest.raises(ValueError, match="set select.candidates >= 2"):
        SelectConfig(selector="confidence")
    with pytest.raises(ValueError, match="needs select.scorer.path"):
        SelectConfig(candidates=2, selector="typicality", scorer={"model": "checkpoint"})
    from synaug.config import dump

    assert "select" not in dump(GenerateConfig())                  # cached runs' keys are unchanged


# ---------------------------------------------------------------------------- candidates
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    base = tmp_path_factory.mktemp("select")
    tr = make_toy_manifest(base / "img", [12, 6, 3], size=16, seed=0)
    va = make_toy_manifest(base / "img", [3, 3, 3], size=16, seed=1, split="val")
    te = make_toy_manifest(base / "img", [4, 4, 4], size=16, seed=2, split="test")
    Manifest.concat([tr, va, te]).write(base / "data.parquet")
    pool = make_toy_manifest(base / "pool", [40, 40, 40], size=16, seed=3, prefix="p")
    pool.write(base / "pool.parquet")
    return base


def test_candidates_extend_todays_draw(toy, tmp_path):
    """The first needed candidates of every cell are exactly the images a plain generation makes."""
    classes = ["class0", "class1", "class2"]
    plan = Plan("class", classes, [Cell(i, c, 12 - 4 * i, 4 * i, attributes={"class": c}) for i, c in enumerate(classes)])
    cfg = GenerateConfig(backend="pool", resolution=16, pool={"manifest": str(toy / "pool.parquet")}, seed=5)
    today = generate(plan, cfg, tmp_path / "today", progress=False)
    cands = generate(candidate_plan(plan, 3), cfg, tmp_path / "cands", progress=False)
    assert len(cands) == 3 * len(today)
    first = first_rows(cands, plan)
    assert list(first.df["source_file"]) == list(today.df["source_file"])
    assert list(first.df["path"]) == list(today.df["path"])
    assert all((tmp_path / "today" / p).read_bytes() == (tmp_path / "cands" / p).read_bytes() for p in first.df["path"])
    with pytest.raises(SynaugError, match="runs inside `synaug run`"):
        generate(plan, cfg.model_copy(update={"select": SelectConfig(candidates=2)}), tmp_path / "x", progress=False)


def test_txt2img_candidates_extend_todays_seeds(tmp_path):
    """txt2img offers more candidates by generating more seeds: the first needed ones are today's images."""
    from synaug.generate.tiny import build_tiny_sd

    sd = build_tiny_sd(tmp_path / "tiny-sd", seed=0)
    classes = ["cat", "dog", "truck"]
    plan = Plan("class", classes, [Cell(i, c, 5, n, attributes={"class": c}) for i, (c, n) in
                                   enumerate(zip(classes, (2, 0, 3)))])
    cfg = GenerateConfig(model=str(sd), steps=2, batch_invariant=True)
    today = generate(plan, cfg, tmp_path / "today", progress=False)
    cands = generate(candidate_plan(plan, 2), cfg, tmp_path / "cands", progress=False)
    first = first_rows(cands, plan)
    assert len(cands) == 10 and list(first.df["seed"]) == list(today.df["seed"])
    assert list(first.df["prompt"]) == list(today.df["prompt"])
    assert [p.read_bytes() for p in first.abspaths()] == [p.read_bytes() for p in today.abspaths()]


# ---------------------------------------------------------------------------- synaug run, end to end
def _run_cfg(toy, select: dict, **train) -> dict:
    return {"name": "sel", "data": {"manifest": str(toy / "data.parquet"), "dataset": None},
            "plan": {"mode": "class"},
            "generate": {"backend": "pool", "resolution": 16, "pool": {"manifest": str(toy / "pool.parquet")},
                         "select": select},
            "train": {"epochs": 2, "batch_size": 16, "model": {"width": 4}, "progress": False,
                      "optim": {"lr": 0.02}, "data": {"cache_dir": str(toy / "cache")},
                      "schedule": {"warmup_epochs": 0, "milestones": [], "factors": []}, **train},
            "finetune": {"epochs": 2, "progress": False, "data": {"cache_dir": str(toy / "cache")}}}


def _run(raw: dict, out: Path) -> list[str]:
    from synaug.run import load_run_config, run

    log: list[str] = []
    run(load_run_config(None, base=raw), out, log=log.append)
    return log


def test_run_selects_by_confidence_and_reports_it(toy, tmp_path):
    out = tmp_path / "run"
    raw = _run_cfg(toy, {"candidates": 3, "selector": "confidence", "keep": "most"})
    log = _run(raw, out)
    assert [line.split("]")[0] for line in log if "running" in line][:5] == \
        ["[data", "[plan", "[candidates", "[scorer", "[select"]
    sel = Manifest.read(out / "select" / "synthetic.parquet")
    assert sel.class_counts(None).tolist() == [0, 6, 9]           # the plan's needs, from 3x candidates
    assert set(sel.df["selector"]) == {"confidence:most x3 (round1 scorer)"} and sel.df["select_score"].notna().all()
    train = Manifest.read(out / "data" / "train.parquet")
    syn = train.with_source("synthetic")
    assert sorted(syn.df["path"]) == sorted(sel.df["path"]) and "select_score" in train.df
    cand = pd.read_parquet(out / "select" / "candidates.parquet")
    for c, g in cand.groupby("label"):                              # the rule: kept >= every rejected
        assert g.loc[g["kept"], "select_score"].min() >= g.loc[~g["kept"], "select_score"].max(), c
    cands = Manifest.read(out / "synthetic" / "candidates" / "synthetic.parquet")
    plan = Plan.read(out / "plan.json")
    assert set(sel.df["path"]) != set(first_rows(cands, plan).df["path"])    # not today's random images
    summary = json.loads((out / "select" / "selection.json").read_text())
    assert summary["per_class"]["class2"] == {**summary["per_class"]["class2"], "candidates": 27, "kept": 9,
                                              "rejected": 18}
    assert "round-1 SYNAuG model" in summary["scorer"] and (out / "select" / "examples.png").is_file()
    report = (out / "report.md").read_text()
    assert "Selection from candidates: kept vs rejected per class" in report and "round-1 SYNAuG model" in report
    # the round-1 scorer trained on real + the first-needed candidates (today's random draw)
    scorer_rows = json.loads((out / "scorer" / "train" / "summary.json").read_text())["train_sources"]
    assert scorer_rows == {"real": 21, "synthetic": 15}
    # another selector: the candidates and the scorer are reused, selection and training rerun
    raw["generate"]["select"]["keep"] = "least"
    log2 = _run(raw, out)
    assert "[candidates] up to date, skipped" in log2 and "[scorer] up to date, skipped" in log2
    assert any(line.startswith("[select] running") for line in log2)
    assert any(line.startswith("[train] running") for line in log2)
    least = Manifest.read(out / "select" / "synthetic.parquet")
    assert set(least.df["path"]).isdisjoint(sel.df["path"])       # 3x candidates: most and least never meet


def test_rotate_keeps_every_candidate_in_rounds():
    kept, rnd = select_cell(SelectConfig(candidates=3, selector="rotate"), 4, None, None, None,
                            np.random.default_rng(0), size=12)
    assert kept.tolist() == list(range(12)) and rnd.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # 12 candidates for 5 needed: two whole rounds; the last two candidates are left out
    kept, rnd = select_cell(SelectConfig(candidates=3, selector="rotate"), 5, np.zeros(12), None, None,
                            np.random.default_rng(0))
    assert kept.tolist() == list(range(10)) and rnd[kept].tolist() == [0] * 5 + [1] * 5
    assert not SelectConfig(candidates=2, selector="rotate").needs_scorer


def test_scorerless_selectors_know_the_candidate_count(tmp_path):
    """random and rotate have no scores to count the candidates from (random x2 used to fail)."""
    from synaug.generate.select import select_rows

    cands = make_toy_manifest(tmp_path, [6, 4, 0], size=8, seed=0, source="synthetic")
    plan = Plan("class", cands.classes, [Cell(0, cands.classes[0], 0, 3), Cell(1, cands.classes[1], 0, 2)])
    kept, score = select_rows(SelectConfig(candidates=2), 0, plan, cands, None, None, None)
    assert cands.select(kept).class_counts(None).tolist()[:2] == [3, 2] and np.isnan(score).all()
    kept, score = select_rows(SelectConfig(candidates=2, selector="rotate"), 0, plan, cands, None, None, None)
    assert kept.all() and score.tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 1, 1]


def test_run_rotates_the_candidates_over_the_epochs(toy, tmp_path):
    out = tmp_path / "run"
    log = _run(_run_cfg(toy, {"candidates": 3, "selector": "rotate"}, epochs=3), out)
    assert not any(line.startswith("[scorer]") for line in log)            # no model scores a rotation
    sel = Manifest.read(out / "select" / "synthetic.parquet")
    assert sel.class_counts(None).tolist() == [0, 18, 27]                  # every candidate kept
    cands = Manifest.read(out / "synthetic" / "candidates" / "synthetic.parquet")
    plan = Plan.read(out / "plan.json")
    first = sel.select((sel.df["select_round"] == 0).to_numpy())
    assert list(first.df["path"]) == list(first_rows(cands, plan).df["path"])   # round 0: today's images
    assert sel.df.groupby(["label", "select_round"]).size().tolist() == [6, 6, 6, 9, 9, 9]
    s = json.loads((out / "train" / "summary.json").read_text())
    assert s["synthetic_rounds"] == 3 and s["rows_per_epoch"] == 21 + 15 and s["num_train"] == 21 + 45
    hist = json.loads((out / "train" / "history.json").read_text())
    assert [h["images"] for h in hist] == [36, 36, 36]
    assert json.loads((out / "metrics.json").read_text())["train_counts_after"] == [12, 12, 12]
    assert json.loads((out / "select" / "selection.json").read_text())["rounds"] == 3
    report = (out / "report.md").read_text()
    assert "every candidate kept, in 3 rounds" in report and "kept vs rejected per class" not in report
    assert "| class2 | 27 | 9 | 3 |" in report                          # candidates, per epoch, rounds
    bad = _run_cfg(toy, {"candidates": 3, "selector": "rotate"}, algorithm={"name": "balanced_softmax"})
    with pytest.raises(SynaugError, match="rotate changes the training rows of every epoch"):
        _run(bad, tmp_path / "bad")
    assert not (tmp_path / "bad" / "synthetic").exists()                    # refused before any stage


def test_two_round_loop_resumes_after_a_kill(toy, tmp_path):
    raw = _run_cfg(toy, {"candidates": 2, "selector": "typicality", "scorer": {"epochs": 6}})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(SYNAUG), "run", str(tmp_path / "run.yaml"), "--out", str(run_dir)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "scorer" / "train" / "last.json"
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.loads(last.read_text())["epoch"]
    assert done < 5, "the scorer finished before it could be killed"
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[candidates] up to date, skipped" in r.stdout
    assert f"[scorer] running (resuming the scorer's training after epoch {done + 1})" in r.stdout
    hist = json.loads((run_dir / "scorer" / "train" / "history.json").read_text())
    assert [h["epoch"] for h in hist] == list(range(6))
    _run(raw, tmp_path / "full")                                   # uninterrupted: the same selection
    a = Manifest.read(run_dir / "select" / "synthetic.parquet").df
    b = Manifest.read(tmp_path / "full" / "select" / "synthetic.parquet").df
    assert list(a["path"]) == list(b["path"]) and np.allclose(a["select_score"], b["select_score"])
