"""Last layer (SYNAuG step 3): balanced real subset, frozen encoder, finetune / retrain / DFR."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from synaug.errors import SynaugError
from synaug.manifest import Manifest
from synaug.models import create_model
from synaug.train import FinetuneConfig, balanced_subset, finetune_last_layer, load_checkpoint
from synaug.train.toydata import make_toy_manifest


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ftdata")
    groups = ["land", "water"]
    real = make_toy_manifest(root, {(0, 0): 24, (0, 1): 5, (1, 0): 6, (1, 1): 20}, groups=groups, size=16, seed=0)
    syn = make_toy_manifest(root / "syn", {(0, 1): 19, (1, 0): 18}, num_classes=2, groups=groups, size=16,
                            seed=9, source="synthetic", prefix="s")
    val = make_toy_manifest(root, {(c, g): 6 for c in range(2) for g in range(2)}, groups=groups, size=16,
                            seed=1, split="val")
    test = make_toy_manifest(root, {(c, g): 3 for c in range(2) for g in range(2)}, groups=groups, size=16,
                             seed=2, split="test")
    return {"all": Manifest.concat([real, syn, val]), "real": real, "val": val, "test": test,
            "cache": str(root / "cache")}


def _cfg(data, **kw):
    return FinetuneConfig.model_validate({"epochs": 3, "batch_size": 8, "lr": 0.05, "progress": False,
                                          "data": {"cache_dir": data["cache"]}, **kw})


def _model(seed=0):
    torch.manual_seed(seed)
    return create_model("resnet20", 2, width=4)


def test_subset_is_balanced_and_only_real_train_rows(data):
    sub, info = balanced_subset(data["all"], "class", None, seed=0)
    assert set(sub.df["source"]) == {"real"} and set(sub.df["split"]) == {"train"}
    assert sub.class_counts().tolist() == [26, 26]  # smallest real class: 6 + 20
    assert info["per_cell"] == 26
    cell, info = balanced_subset(data["all"], "cell", None, seed=0)
    assert cell.cell_counts().tolist() == [[5, 5], [5, 5]]
    fixed, info = balanced_subset(data["all"], "cell", 6, seed=0)
    assert fixed.cell_counts().tolist() == [[6, 5], [6, 6]] and info["short_cells"] == {"1": 5}
    # seeded: same seed same rows, other seed other rows
    a = balanced_subset(data["all"], "cell", 4, seed=1)[0].df["path"].tolist()
    assert a == balanced_subset(data["all"], "cell", 4, seed=1)[0].df["path"].tolist()
    assert a != balanced_subset(data["all"], "cell", 4, seed=2)[0].df["path"].tolist()
    pool = set(data["real"].df["path"])
    assert set(a) <= pool


def test_subset_needs_every_class(data):
    only0 = data["real"].select((data["real"].df["label"] == 0).to_numpy())
    with pytest.raises(SynaugError, match="class1"):
        balanced_subset(only0)


def test_finetune_updates_only_the_head(data, tmp_path):
    model = _model()
    enc_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    out = finetune_last_layer(model, data["all"], _cfg(data, balance_by="cell", lr=0.002, epochs=5), tmp_path)
    for k, v in out.encoder.state_dict().items():
        assert torch.equal(v, enc_before[k]), f"encoder changed: {k}"   # incl. BN running stats
    assert not torch.equal(out.head.weight, head_before["weight"])
    rec = json.loads((tmp_path / "finetune.json").read_text())
    assert rec["mode"] == "finetune" and rec["subset"]["per_cell"] == 5
    assert rec["history"][-1]["loss"] < rec["history"][0]["loss"]
    sub = Manifest.read(tmp_path / "finetune_subset.parquet")
    assert len(sub) == 20 and set(sub.df["source"]) == {"real"}
    saved = load_checkpoint(tmp_path / "model.safetensors")
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(saved(x), out(x), atol=1e-5)
    assert saved.meta["stage"] == "finetune"


def test_finetune_starts_from_the_trained_head_and_retrain_reinitialises(data):
    # with a zero learning-rate effect (1 epoch, tiny lr) finetune keeps the head, retrain replaces it
    cfg = dict(epochs=1, lr=1e-12, weight_decay=0.0, momentum=0.0)
    m1 = _model()
    trained_head = m1.head.weight.clone()
    ft = finetune_last_layer(m1, data["all"], _cfg(data, mode="finetune", **cfg))
    assert torch.allclose(ft.head.weight, trained_head, atol=1e-9)
    m2 = _model()
    rt = finetune_last_layer(m2, data["all"], _cfg(data, mode="retrain", **cfg))
    assert not torch.allclose(rt.head.weight, trained_head)
    m3 = _model()
    rt2 = finetune_last_layer(m3, data["all"], _cfg(data, mode="retrain", **cfg))
    assert torch.equal(rt.head.weight, rt2.head.weight)  # seeded re-initialisation
    m4 = _model()
    rt3 = finetune_last_layer(m4, data["all"], _cfg(data, mode="retrain", seed=7, **cfg))
    assert not torch.equal(rt.head.weight, rt3.head.weight)


def test_dfr_fits_on_validation_rows_with_the_scaler_of_the_training_features(data, tmp_path):
    """DFR^Tr_Val through the last-layer API: the head is exactly :func:`dfr_tr_val` (which
    tests/test_reference_baselines.py compares with dfr_evaluate_spurious.py) applied to the
    frozen features of the real training rows (scaler) and of the validation rows (fit)."""
    from synaug.train.evaluate import cell_ids
    from synaug.train.finetune import dfr_tr_val, extract_features, real_train_rows
    from synaug.train.loop import seed_for

    model = _model()
    enc_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    cfg = _cfg(data, mode="dfr", balance_by="cell", dfr_Cs=[1.0, 0.01], dfr_repeats=3)
    X, _ = extract_features(model, real_train_rows(data["all"]), cfg, torch.device("cpu"))
    Xv, yv = extract_features(model, data["val"], cfg, torch.device("cpu"))
    out = finetune_last_layer(model, data["all"], cfg, tmp_path)
    rec = json.loads((tmp_path / "finetune.json").read_text())
    d = rec["dfr"]
    assert set(d["val_scores"]) == {"1.0", "0.01"} and d["fit_on"] == "validation rows"
    assert d["repeats"] == 3 and d["per_group"] == 6 and d["subset_size"] == 24 and d["scaler_rows"] == 55
    assert "fit on these validation rows" in rec["val"]["note"]
    ref = dfr_tr_val(X.numpy(), Xv.numpy(), yv.numpy(), cell_ids(yv.numpy(), data["val"].df["group"].to_numpy(), 2),
                     [1.0, 0.01], repeats=3, num_classes=2, seed=seed_for(0, 0xDF) % 2**32)
    assert d["C"] == ref["C"]
    for k, v in out.encoder.state_dict().items():
        assert torch.equal(v, enc_before[k])
    # binary DFR: class-0 logit fixed at 0, class 1 carries the averaged decision function
    assert isinstance(out.head, torch.nn.Linear) and torch.all(out.head.weight[0] == 0)
    with torch.no_grad():
        z = out.head(Xv).numpy().astype(np.float64)
    want = ((Xv.numpy() - ref["mean"]) / ref["scale"]) @ ref["coef"].T + ref["intercept"]
    assert np.allclose(z[:, 1] - z[:, 0], want[:, 0], atol=1e-3)
    saved = load_checkpoint(tmp_path / "model.safetensors")
    assert saved.spec["kwargs"]["head"] == "linear"
    # 20 draws by default (the reference's num_retrains)
    assert FinetuneConfig(mode="dfr").dfr_draws == 20 and FinetuneConfig(mode="dfr", dfr_data="train").dfr_draws == 10


def test_dfr_balances_by_cell_on_data_with_groups_unless_told_otherwise(data, tmp_path):
    """On a dataset with groups, DFR's "worst group" is a class x group cell, as in the reference
    (Waterbirds' four groups): ``balance_by: auto`` (the default) balances DFR by cell."""
    def dfr(**kw):
        out = tmp_path / str(len(list(tmp_path.iterdir())))
        finetune_last_layer(_model(), data["all"], _cfg(data, mode="dfr", dfr_Cs=[1.0], dfr_repeats=1, **kw), out)
        return json.loads((out / "finetune.json").read_text())["dfr"]

    assert FinetuneConfig().balance_by == "auto"
    d = dfr()                                                  # 4 cells of 6 validation rows
    assert d["balance_by"] == "cell" and d["groups"] == 4 and d["per_group"] == 6
    d = dfr(balance_by="class")                                # told otherwise: 2 classes of 12
    assert d["balance_by"] == "class" and d["groups"] == 2 and d["per_group"] == 12
    d = dfr(dfr_data="train")                                  # the training-draw variant: smallest real cell 5
    assert d["balance_by"] == "cell" and d["subset_size"] == 4 * 5
    # without groups DFR balances classes; fine-tuning keeps class balance unless told cell
    assert FinetuneConfig(mode="dfr").balance_for(False) == "class"
    assert FinetuneConfig(mode="finetune").balance_for(True) == "class"
    assert FinetuneConfig(mode="retrain", balance_by="cell").balance_for(True) == "cell"


def test_dfr_needs_validation_rows(data):
    with pytest.raises(SynaugError, match="validation split"):
        finetune_last_layer(_model(), data["real"], _cfg(data, mode="dfr"))


def test_dfr_train_variant_equals_sklearn_on_standardised_features(data):
    """The earlier synaug variant, kept as ``dfr_data: train``: draws of the real training rows,
    scaler fit on the first draw."""
    from synaug.train.finetune import _dfr
    from synaug.train.evaluate import resolve_device

    model = _model()
    cfg = _cfg(data, mode="dfr", dfr_data="train", balance_by="class", dfr_Cs=[0.5], dfr_repeats=1, dfr_penalty="l2")
    rec = _dfr(model, data["all"], None, cfg, resolve_device("cpu"))
    assert rec["C"] == 0.5 and rec["select"].startswith("none") and rec["fit_on"] == "real training rows"
    # refit the same draw by hand and compare decision functions
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from synaug.train.finetune import _draw, extract_features, real_train_rows
    from synaug.train.loop import seed_for

    pool = real_train_rows(data["all"])
    X, y = extract_features(model, pool, cfg, torch.device("cpu"))
    X, y = X.numpy().astype(np.float64), y.numpy()
    idx = _draw(pool, "class", None, seed_for(cfg.seed, 0, 0xDF))[0]
    sc = StandardScaler().fit(X[idx])
    clf = LogisticRegression(C=0.5, l1_ratio=0.0, solver="liblinear", max_iter=2000).fit(sc.transform(X[idx]), y[idx])
    with torch.no_grad():
        z = model.head(torch.tensor(X, dtype=torch.float32)).numpy()
    assert np.allclose(z[:, 1] - z[:, 0], clf.decision_function(sc.transform(X)), atol=1e-3)


def test_finetune_refuses_test_rows(data):
    both = Manifest.concat([data["real"], data["test"]])
    with pytest.raises(SynaugError, match="fine-tuning"):
        finetune_last_layer(_model(), both, _cfg(data))
    with pytest.raises(SynaugError, match="model selection"):
        finetune_last_layer(_model(), data["real"], _cfg(data), val_manifest=data["test"])


# ---------------------------------------------------------------------- class-balanced sampling (cRT)
def test_class_balanced_sampling_uses_every_real_row_with_equal_class_weight(data):
    from synaug.train.finetune import step3_order, step3_rows

    rows, info, w = step3_rows(data["all"], _cfg(data, sampling="class_balanced"), "class")
    assert len(rows) == len(data["real"]) == 55 and set(rows.df["source"]) == {"real"}
    assert set(rows.df["split"]) == {"train"}
    y = rows.df["label"].to_numpy()
    counts = np.bincount(y)                                          # 29 / 26 real rows
    assert np.allclose(w.numpy(), 1.0 / counts[y])                   # each row: 1 / its class's count
    assert info["cells"] == {"0": 29, "1": 26} and info["samples_per_epoch"] == 55
    draws = step3_order(len(rows), w, 20000, torch.Generator().manual_seed(0))
    freq = np.bincount(y[draws.numpy()], minlength=2) / len(draws)
    # classes drawn equally often: 1 / C each, the expected frequencies of class-aware sampling in
    # facebookresearch/classifier-balancing data/ClassAwareSampler.py (ClassAwareSampler: a shuffled
    # cycle over classes, one image each); synaug draws i.i.d. instead (docs/synthetic.md)
    assert abs(freq[0] - 0.5) < 0.02
    assert len(np.unique(draws.numpy())) == 55                       # and every row is seen
    # by cell: the four class x group cells are drawn equally often
    rows, info, w = step3_rows(data["all"], _cfg(data, sampling="class_balanced"), "cell")
    cell = rows.df["label"].to_numpy() * 2 + rows.df["group"].to_numpy()
    d = step3_order(len(rows), w, 40000, torch.Generator().manual_seed(1)).numpy()
    assert np.abs(np.bincount(cell[d], minlength=4) / len(d) - 0.25).max() < 0.02
    # the paper's subset: no weights, a plain shuffle of the subset
    sub, info, w = step3_rows(data["all"], _cfg(data), "class")
    assert w is None and len(sub) == 52 and info["per_cell"] == 26
    assert sorted(step3_order(52, None, None, torch.Generator().manual_seed(0)).tolist()) == list(range(52))


def test_class_balanced_finetuning_trains_on_every_real_row(data, tmp_path):
    m_sub, m_cb = _model(), _model()
    enc_before = {k: v.clone() for k, v in m_cb.encoder.state_dict().items()}
    sub = finetune_last_layer(m_sub, data["all"], _cfg(data))
    out = finetune_last_layer(m_cb, data["all"], _cfg(data, sampling="class_balanced", samples_per_epoch=40), tmp_path)
    for k, v in out.encoder.state_dict().items():
        assert torch.equal(v, enc_before[k]), f"encoder changed: {k}"
    assert not torch.allclose(out.head.weight, sub.head.weight)      # other rows, other head
    rec = json.loads((tmp_path / "finetune.json").read_text())
    assert rec["subset"]["sampling"] == "class_balanced" and rec["subset"]["samples_per_epoch"] == 40
    assert len(rec["history"]) == 3
    saved = Manifest.read(tmp_path / "finetune_subset.parquet")     # the rows step 3 could draw from
    assert sorted(saved.df["path"]) == sorted(data["real"].df["path"])
    again = finetune_last_layer(_model(), data["all"], _cfg(data, sampling="class_balanced", samples_per_epoch=40))
    assert torch.equal(again.head.weight, out.head.weight)           # seeded draws
    for bad, msg in (({"mode": "dfr"}, "not dfr"), ({"per_cell": 5}, "per_cell sizes the paper's subset"),
                     ({"sampling": "subset", "samples_per_epoch": 10}, "needs finetune.sampling: class_balanced")):
        with pytest.raises(ValueError, match=msg):
            FinetuneConfig.model_validate({"sampling": "class_balanced", **bad})
