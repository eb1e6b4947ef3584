"""`synaug run configs/table3a-utkface-cpu.yaml` end to end at CI size on the real UTKFace faces of
../shared/data: balanced test cells, a held-out pool disjoint from every split, per-race
uniformization, the fairness report section with definitions and licence; plus the
held-out-pool data option on its own."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from synaug.errors import SynaugError
from synaug.manifest import Manifest

ROOT = Path(__file__).resolve().parents[1]
CI_SIZE = ["data.options.test_per_cell=20", "data.options.val_frac=0.02", "data.train_fraction=0.03",
           "generate.resolution=24", "train.epochs=1", "train.data.image_size=24", "train.progress=false",
           "finetune.epochs=2", "finetune.progress=false"]


@pytest.fixture(scope="module")
def utk_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("t3") / "run"
    exe = Path(sys.executable).parent / "synaug"
    sets = [a for s in CI_SIZE for a in ("--set", s)]
    r = subprocess.run([str(exe), "run", str(ROOT / "configs" / "table3a-utkface-cpu.yaml"), "--out", str(out), *sets],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r


def test_utkface_run_splits_pool_and_uniformization(utk_run):
    out, r = utk_run
    real = Manifest.read(out / "data" / "real.parquet")
    pool = Manifest.read(out / "data" / "heldout.parquet")
    syn = Manifest.read(out / "synthetic" / "synthetic.parquet")
    assert real.groups == ["White", "Black", "Asian", "Indian"] and real.classes == ["male", "female"]
    assert real.cell_counts("test").tolist() == [[20] * 4, [20] * 4]  # balanced test cells
    # the pool is half of every training cell, disjoint from train / val / test
    assert not set(pool.df["path"]) & set(real.df["path"])
    tr = real.cell_counts("train")
    ratio = tr / pool.cell_counts("train")
    assert np.allclose(ratio, 0.03, atol=0.01)  # a 3 % share of the other half of every cell
    # the "synthetic" faces are pool faces of the planned (gender, race) cell
    src = pool.df.set_index("path")
    for _, row in syn.df.iterrows():
        p = src.loc[row["source_file"]]
        assert (p["label"], p["group"]) == (row["label"], row["group"])
    after = Manifest.read(out / "data" / "train.parquet").split("train").cell_counts(None)
    assert (after[0] == after[1]).all() and (after >= tr).all()  # within every race, both genders equal
    assert (after - tr).sum() == len(syn) > 0


def test_utkface_run_metrics_and_report(utk_run):
    out, r = utk_run
    s = json.loads((out / "metrics.json").read_text())
    assert s["generator"].startswith("held-out real UTKFace faces")
    f = s["results"]["finetuned"]["fairness"]
    assert f["over"] == "group (White, Black, Asian, Indian)" and f["positive_class"] == "female"
    assert set(f["definitions"]) >= {"demographic_parity", "equal_opportunity", "equalized_odds",
                                     "equalized_odds_mean", "class_accuracy_gap_mean", "class_accuracy_gap_max"}
    pred = pd.read_csv(out / "eval" / "finetune" / "predictions.csv")
    from synaug import metrics as M

    assert f["class_accuracy_gap_max"] == pytest.approx(M.class_accuracy_gap(pred["label"], pred["pred"],
                                                                              pred["group"], "max"))
    ga = s["results"]["finetuned"]["group_accuracy"]
    assert set(ga["per_group"]) == {f"{c}/{g}" for c in ("male", "female") for g in ("White", "Black", "Asian", "Indian")}
    md = (out / "report.md").read_text()
    assert "## Groups and fairness" in md and "non-commercial research" in md
    assert "held-out real UTKFace faces" in md
    assert "| White | female |" in md and "TPR of the group (%)" in md
    for key in ("demographic_parity_population", "equal_opportunity", "equalized_odds_mean"):
        assert key in md
    assert (out / "plots" / "cell_accuracy.png").stat().st_size > 1000
    assert "Groups and fairness" in (out / "report.html").read_text()


def test_heldout_fraction_keeps_cell_proportions(make_manifest, tmp_path):
    from synaug.prepare import DataConfig, _per_cell_share, prepare

    m = make_manifest([[40, 10], [20, 60]], extra_splits={"test": [[5, 5], [5, 5]]})
    mask = _per_cell_share(m, "train", 0.5, seed=0)
    assert m.select(mask).cell_counts("train").tolist() == [[20, 5], [10, 30]]
    assert not mask[(m.df["split"] == "test").to_numpy()].any()
    assert (_per_cell_share(m, "train", 0.5, seed=0) == mask).all()  # seeded
    assert (_per_cell_share(m, "train", 0.5, seed=1) != mask).any()
    m.write(tmp_path / "m.parquet")
    for f in m.abspaths():  # prepare checks every image file of the rows it keeps
        f.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4)).save(f)
    prep = prepare(DataConfig(dataset=None, manifest=str(tmp_path / "m.parquet"), heldout_fraction=0.5,
                              train_fraction=0.2))
    assert prep.pool.cell_counts("train").tolist() == [[20, 5], [10, 30]]
    assert prep.real.cell_counts("train").tolist() == [[4, 1], [2, 6]]  # 20 % of the rest, same proportions
    assert prep.real.cell_counts("test").tolist() == [[5, 5], [5, 5]]  # test untouched
    assert not set(prep.pool.df["path"]) & set(prep.real.df["path"])
    with pytest.raises(SynaugError, match="cannot be combined with imbalance_factor"):
        prepare(DataConfig(dataset="shared-cifar10", imbalance_factor=10, heldout_fraction=0.5))
