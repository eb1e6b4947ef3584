"""Evaluation outputs and the train / finetune / evaluate command line."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from synaug import metrics as M
from synaug.cli import main
from synaug.manifest import Manifest
from synaug.models import create_model
from synaug.train import compute_metrics, evaluate
from synaug.train.config import DataConfig
from synaug.train.toydata import make_toy_manifest


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaldata")
    groups = ["a", "b"]
    tr = make_toy_manifest(root, {(0, 0): 20, (0, 1): 4, (1, 0): 4, (1, 1): 12}, groups=groups, size=16, seed=0)
    syn = make_toy_manifest(root / "syn", {(0, 1): 16, (1, 0): 16}, num_classes=2, groups=groups, size=16,
                            seed=4, source="synthetic", prefix="s")
    val = make_toy_manifest(root, {(c, g): 3 for c in range(2) for g in range(2)}, groups=groups, size=16,
                            seed=1, split="val")
    test = make_toy_manifest(root, {(c, g): 5 for c in range(2) for g in range(2)}, groups=groups, size=16,
                             seed=2, split="test")
    full = Manifest.concat([tr, syn, val, test])
    full.write(root / "full.parquet")
    Manifest.concat([tr, syn, val]).write(root / "trainval.parquet")
    return {"root": root, "train": tr, "test": test, "full": root / "full.parquet",
            "trainval": root / "trainval.parquet"}


def test_compute_metrics_agrees_with_metric_functions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    g = rng.integers(0, 2, 200)
    p = np.where(rng.random(200) < 0.8, y, 1 - y)
    res = compute_metrics(y, p, g, ["neg", "pos"], ["a", "b"], [150, 10], [[100, 50], [5, 5]])
    assert res["top1"] == pytest.approx(M.top1_accuracy(y, p))
    assert res["shot"] == pytest.approx(M.shot_accuracy(y, p, [150, 10]), nan_ok=True)
    cells = y * 2 + g
    assert res["group_accuracy"]["worst"] == pytest.approx(M.group_accuracy(y, p, cells)["worst"])
    assert res["group_accuracy"]["weighted_mean"] == pytest.approx(
        M.group_accuracy(y, p, cells, [100, 50, 5, 5])["weighted_mean"])
    assert res["fairness"]["demographic_parity"] == pytest.approx(M.demographic_parity(p, g))
    assert res["fairness"]["equalized_odds"] == pytest.approx(M.equalized_odds(y, p, g))
    assert set(res["group_accuracy"]["per_group"]) == {"neg/a", "neg/b", "pos/a", "pos/b"}
    # Waterbirds' "mean" is plain accuracy; the group means are listed beside it, each defined
    ga = res["group_accuracy"]
    assert ga["mean"] == pytest.approx(res["top1"])
    assert ga["unweighted_mean"] == pytest.approx(M.group_accuracy(y, p, cells)["unweighted_mean"])
    assert set(ga["definitions"]) == {"worst", "mean", "unweighted_mean", "weighted_mean"}
    # fairness over the group only, every gap with its definition; DP at the training base rates
    f = res["fairness"]
    assert f["over"] == "group (a, b)" and f["positive_class"] == "pos"
    assert set(f["definitions"]) == set(M.DEFINITIONS) and all(k in f for k in M.DEFINITIONS)
    want = M.demographic_parity_population(y, p, g, {0: (100, 5), 1: (50, 5)})
    assert f["demographic_parity_population"] == pytest.approx(want)
    hs = M.DEFINITION_SETS[M.HEADLINE_SET]
    assert f["headline"]["set"] == M.HEADLINE_SET
    assert [f["headline"][k] for k in ("DP", "EO", "ED")] == [f[hs[k]] for k in ("DP", "EO", "ED")]
    assert set(f["sets"]) == set(M.DEFINITION_SETS)
    # more than two classes: Jung et al.'s class-wise gaps only
    y3 = rng.integers(0, 3, 200)
    p3 = np.where(rng.random(200) < 0.7, y3, 0)
    r3 = compute_metrics(y3, p3, g, ["x", "y", "z"], ["a", "b"])
    assert set(r3["fairness"]) == {"over", "class_accuracy_gap_mean", "class_accuracy_gap_max", "definitions"}
    assert r3["fairness"]["class_accuracy_gap_max"] == pytest.approx(M.class_accuracy_gap(y3, p3, g, "max"))
    assert "weighted_mean" not in r3["group_accuracy"]["definitions"]


def test_evaluate_writes_json_csv_png(data, tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet20", 2, width=4)
    real_counts = data["train"].class_counts()
    res = evaluate(model, data["test"], real_counts, tmp_path, data["train"].cell_counts(),
                   counts_source="real train rows", data=DataConfig(cache_dir=str(tmp_path / "c")))
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert stored["shot_counts"] == {"source": "real train rows", "counts": [24, 16],
                                     "buckets": {"many": ">100", "medium": "20-100", "few": "<20"}}
    assert stored["shot"]["many"] is None  # empty bucket -> null (strict JSON)
    assert stored["top1"] == pytest.approx(res["top1"])
    per = pd.read_csv(tmp_path / "per_class.csv")
    assert per["n_eval"].tolist() == [10, 10] and per["bucket"].tolist() == ["medium", "few"]
    pred = pd.read_csv(tmp_path / "predictions.csv")
    assert len(pred) == 20 and (pred["pred"] == pred["label"]).mean() == pytest.approx(res["top1"])
    png = (tmp_path / "confusion.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "fairness" in res and "group_accuracy" in res


def test_a_shared_encoder_runs_once_and_its_stored_features_give_the_same_logits(data, tmp_path):
    from synaug.train.data import ImageSet
    from synaug.train.evaluate import head_logits, predict_features_and_logits, predict_logits

    torch.manual_seed(0)
    model = create_model("resnet20", 2, width=4).eval()
    dc = DataConfig(cache_dir=str(tmp_path / "c"), eval_batch_size=8)     # 20 rows: three batches
    store = tmp_path / "a" / "features.safetensors"
    first = evaluate(model, data["test"], out_dir=tmp_path / "a", data=dc, features_out=store)
    assert first["encoder_features"]["reused_from"] is None and store.is_file()
    with torch.no_grad():                                 # step 3: a new head, the same encoder
        model.head.weight.normal_()
    direct = evaluate(model, data["test"], out_dir=tmp_path / "direct", data=dc)
    calls = []
    hook = model.encoder.register_forward_hook(lambda *a: calls.append(1))
    shared = evaluate(model, data["test"], out_dir=tmp_path / "b", data=dc, features_from=[store])
    assert calls == [] and shared["encoder_features"]["reused_from"] == str(store)
    assert shared["top1"] == direct["top1"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "b" / "predictions.csv"),
                                  pd.read_csv(tmp_path / "direct" / "predictions.csv"))
    hook.remove()
    images = ImageSet(data["test"], dc, "evaluation", torch.device("cpu"), True)
    feats, logits = predict_features_and_logits(model, images, 8)
    assert torch.equal(logits, predict_logits(model, images, 8))              # bit for bit
    assert torch.equal(head_logits(model, feats, 8, "off", torch.device("cpu")), logits)
    # any encoder change (here a batch-norm statistic) -> the encoder runs again
    with torch.no_grad():
        next(m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_mean += 0.5
    hook = model.encoder.register_forward_hook(lambda *a: calls.append(1))
    again = evaluate(model, data["test"], out_dir=tmp_path / "c2", data=dc, features_from=[store])
    assert calls and again["encoder_features"]["reused_from"] is None


def test_cli_train_finetune_evaluate(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SYNAUG_CACHE", str(tmp_path / "cache"))
    cfg = tmp_path / "train.yaml"
    cfg.write_text("epochs: 2\nbatch_size: 16\nmodel: {name: resnet20, width: 4}\nprogress: false\n"
                   "schedule: {warmup_epochs: 0}\nalgorithm: {name: balanced_softmax}\n")
    run = tmp_path / "run"
    assert main(["train", "-c", str(cfg), "--train-manifest", str(data["trainval"]), "--out", str(run)]) == 0
    assert (run / "model.safetensors").is_file() and (run / "config.yaml").is_file()
    ft = tmp_path / "ft.yaml"
    ft.write_text("mode: finetune\nbalance_by: cell\nepochs: 2\nprogress: false\n")
    assert main(["finetune", "-c", str(ft), "--checkpoint", str(run), "--manifest", str(data["trainval"]),
                 "--out", str(tmp_path / "ft")]) == 0
    assert (tmp_path / "ft" / "model.safetensors").is_file()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "ft"), "--manifest", str(data["full"]),
                 "--out", str(tmp_path / "eval")]) == 0
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["num_samples"] == 20
    assert m["shot_counts"]["counts"] == [24, 16]  # real counts, not the uniformized 40 / 32
    assert "real train rows" in m["shot_counts"]["source"]
    capsys.readouterr()
    # a manifest that also holds the test split: training reads only its train/val rows and
    # says so (the README's train/finetune/evaluate example uses one file for all three)
    assert main(["train", "-c", str(cfg), "--train-manifest", str(data["full"]), "--out", str(tmp_path / "all")]) == 0
    assert "its 20 test rows are not read" in capsys.readouterr().err
    summary = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert (summary["num_train"], summary["num_val"]) == (72, 12)


def test_cli_config_error_is_one_line(tmp_path, capsys, data):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("optim: {lr: fast}\n")
    assert main(["train", "-c", str(cfg), "--train-manifest", str(data["trainval"]), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("synaug: error:") and "optim.lr" in err and "\n" not in err
    assert main(["train", "--train-manifest", str(data["trainval"]), "--out", str(tmp_path / "o"),
                 "--set", "mix.mixupp=true"]) == 2
    assert "unknown key 'mix.mixupp'" in capsys.readouterr().err
