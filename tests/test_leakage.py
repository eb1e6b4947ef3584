"""No leakage: no test-split row reaches training, fine-tuning, model selection, the DFR C sweep
or the generator's pool; the last-layer subset comes from real training rows only.

Every image the training engine serves goes through ``ImageSet`` (both the in-memory and the
streaming path) and every decode of the in-memory path through ``_load_rgb``; both are wrapped
to record the resolved path together with the purpose the set was built for. The pool
generator's ``source_of`` is wrapped too. Then a whole ``synaug run`` (data -> plan -> pool
generation -> train with model selection -> DFR with its C sweep -> evaluate) is executed on a
manifest that contains test rows, and the records are compared with the test split.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
import torch

from synaug.errors import SynaugError
from synaug.manifest import Manifest
from synaug.train import FinetuneConfig, TrainConfig, finetune_last_layer, train_model
from synaug.train.toydata import make_toy_manifest

GUARDED = ("training", "fine-tuning", "model selection")


# one torch thread, as the CLI subprocesses get (OMP_NUM_THREADS=1 from conftest)
pytestmark = pytest.mark.usefixtures("one_thread")


class Spy:
    def __init__(self):
        self.served: dict[str, set[str]] = defaultdict(set)    # purpose -> paths an ImageSet serves
        self.decoded: dict[str, set[str]] = defaultdict(set)   # purpose -> paths decoded from disk
        self.pool: set[str] = set()                            # pool images the generator copied
        self.purpose: list[str] = []


def _resolved(paths) -> set[str]:
    return {str(Path(p).resolve()) for p in paths}


@pytest.fixture
def spy(monkeypatch) -> Spy:
    from synaug.generate import pool as pool_mod
    from synaug.train import data as D

    s = Spy()
    init, load_rgb, source_of = D.ImageSet.__init__, D._load_rgb, pool_mod.PoolGenerator.source_of

    def spy_init(self, manifest, data, purpose, *a, **kw):
        s.purpose.append(purpose)
        try:
            init(self, manifest, data, purpose, *a, **kw)
        finally:
            s.purpose.pop()
        s.served[purpose] |= _resolved(manifest.abspaths())  # only sets that were accepted

    def spy_load(path, size):
        s.decoded[s.purpose[-1] if s.purpose else "?"].add(str(Path(path).resolve()))
        return load_rgb(path, size)

    def spy_source(self, item):
        p = source_of(self, item)
        s.pool.add(str(Path(p).resolve()))
        return p

    monkeypatch.setattr(D.ImageSet, "__init__", spy_init)
    monkeypatch.setattr(D, "_load_rgb", spy_load)
    monkeypatch.setattr(pool_mod.PoolGenerator, "source_of", spy_source)
    return s


def _assert_no_test(spy: Spy, test_paths: set[str]) -> None:
    for purpose in GUARDED:
        assert not spy.served[purpose] & test_paths, purpose
        assert not spy.decoded[purpose] & test_paths, purpose
    assert not spy.decoded["?"] & test_paths


# ---------------------------------------------------------------------------- the whole run
def test_full_run_keeps_test_rows_out_of_everything_but_evaluation(tmp_path, spy):
    from synaug.run import load_run_config, run

    root = tmp_path / "img"
    train = make_toy_manifest(root, [40, 40, 40, 40], size=16, seed=0)
    test = make_toy_manifest(root, [8, 8, 8, 8], size=16, seed=1, split="test")
    Manifest.concat([train, test]).write(tmp_path / "all.parquet")
    cache = str(tmp_path / "cache")
    cfg = load_run_config(None, base={
        "name": "leak", "seed": 0,
        "data": {"dataset": None, "manifest": str(tmp_path / "all.parquet"), "imbalance_factor": 4,
                 "img_max": 20, "val_per_class": 6},
        "plan": {"mode": "class"},
        "generate": {"backend": "pool", "resolution": 16,
                     "pool": {"manifest": "heldout", "shift": "synthetic-domain"}},
        "train": {"epochs": 2, "batch_size": 32, "model": {"width": 4}, "progress": False,
                  "schedule": {"warmup_epochs": 0, "milestones": [], "factors": []}, "data": {"cache_dir": cache}},
        "finetune": {"mode": "dfr", "dfr_Cs": [1.0, 0.1], "dfr_repeats": 2, "progress": False,
                     "data": {"cache_dir": cache}},
        "eval": {"device": "cpu"}})
    out = tmp_path / "run"
    run(cfg, out, log=lambda *_: None)

    real = Manifest.read(out / "data" / "real.parquet")
    syn = Manifest.read(out / "synthetic" / "synthetic.parquet")
    test_paths = _resolved(real.split("test").abspaths())
    val_paths = _resolved(real.split("val").abspaths())
    real_train = _resolved(real.split("train").abspaths())
    syn_paths = _resolved(syn.abspaths())
    input_train = _resolved(train.abspaths())
    assert len(test_paths) == 32 and val_paths and syn_paths

    _assert_no_test(spy, test_paths)
    # each guarded purpose really ran, on exactly the rows it should
    assert spy.served["training"] == real_train | syn_paths
    assert spy.served["model selection"] == val_paths
    # DFR^Tr_Val: the scaler on the real train rows, the fit and the C tuning on val
    assert spy.served["fine-tuning"] == real_train | val_paths
    assert spy.decoded["training"] and spy.decoded["fine-tuning"] | spy.decoded["model selection"]
    # the test split is read, by evaluation only (proves the instrument sees test rows)
    assert spy.served["evaluation"] == test_paths
    # validation was carved from the training images; the pool is disjoint from train, val and test
    assert val_paths <= input_train and not val_paths & real_train
    assert spy.pool and spy.pool <= input_train - real_train - val_paths
    import json

    ft = json.loads((out / "finetune" / "finetune.json").read_text())
    assert set(ft["dfr"]["val_scores"]) == {"1.0", "0.1"}  # the sweep happened, on val
    used = Manifest.read(out / "data" / "train.parquet")
    assert set(used.df["split"]) <= {"train", "val"}


# ---------------------------------------------------------------------------- direct API
@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Real train (imbalanced), synthetic train, val and test rows, plus an untrained model."""
    from synaug.models import create_model

    root = tmp_path_factory.mktemp("mixed")
    real = make_toy_manifest(root, [12, 8, 6], size=16, seed=0)
    syn = make_toy_manifest(root / "syn", [0, 4, 6], num_classes=3, size=16, seed=2, source="synthetic", prefix="s")
    val = make_toy_manifest(root, [6, 6, 6], size=16, seed=3, split="val")
    test = make_toy_manifest(root, [3, 3, 3], size=16, seed=4, split="test")
    torch.manual_seed(0)
    model = create_model("resnet32", 3, width=4)
    return {"m": Manifest.concat([real, syn, val]), "real": real, "val": val, "test": test, "model": model,
            "cache": str(root / "cache")}


def _ft_cfg(mixed, **kw) -> FinetuneConfig:
    return FinetuneConfig.model_validate({"epochs": 2, "batch_size": 8, "progress": False,
                                          "data": {"cache_dir": mixed["cache"]}, **kw})


@pytest.mark.parametrize("mode", ["finetune", "retrain"])
def test_finetune_subset_is_real_train_only(mixed, spy, tmp_path, mode):
    import copy

    real_train = _resolved(mixed["real"].abspaths())
    for seed in range(3):
        model = copy.deepcopy(mixed["model"])
        out = tmp_path / f"{mode}{seed}"
        finetune_last_layer(model, mixed["m"], _ft_cfg(mixed, mode=mode, seed=seed), out)
        sub = Manifest.read(out / "finetune_subset.parquet")
        assert set(sub.df["split"]) == {"train"} and set(sub.df["source"]) == {"real"}
        assert sub.class_counts().tolist() == [6, 6, 6]  # balanced: the smallest real class
        assert _resolved(sub.abspaths()) <= real_train
    assert spy.served["fine-tuning"] <= real_train  # never a synthetic, val or test row
    assert spy.served["model selection"] == _resolved(mixed["val"].abspaths())


def test_dfr_sweep_uses_real_train_and_val_only(mixed, spy, tmp_path):
    import copy

    model = finetune_last_layer(copy.deepcopy(mixed["model"]), mixed["m"],
                                _ft_cfg(mixed, mode="dfr", dfr_Cs=[1.0, 0.3], dfr_repeats=2), tmp_path)
    assert set(model.meta["finetune"]["dfr"]["val_scores"]) == {"1.0", "0.3"}
    allowed = _resolved(mixed["real"].abspaths()) | _resolved(mixed["val"].abspaths())
    assert spy.served["fine-tuning"] == allowed


def test_test_rows_are_refused_before_anything_is_decoded(mixed, spy, tmp_path):
    import copy

    from synaug.train.config import DataConfig
    from synaug.train.data import ImageSet

    test, m = mixed["test"], mixed["m"]
    with_test = Manifest.concat([m, test])
    tcfg = TrainConfig.model_validate({"epochs": 1, "batch_size": 8, "model": {"width": 4}, "progress": False,
                                       "data": {"cache_dir": mixed["cache"]}})
    cases = [
        lambda: train_model(with_test, None, tcfg, tmp_path / "a"),
        lambda: train_model(m, test, tcfg, tmp_path / "b"),                  # test as validation
        lambda: finetune_last_layer(copy.deepcopy(mixed["model"]), with_test, _ft_cfg(mixed), tmp_path / "c"),
        lambda: finetune_last_layer(copy.deepcopy(mixed["model"]), m, _ft_cfg(mixed), tmp_path / "d", test),
        lambda: finetune_last_layer(copy.deepcopy(mixed["model"]), m, _ft_cfg(mixed, mode="dfr"), tmp_path / "e",
                                    test),                                   # test as the DFR sweep's val
    ] + [lambda p=p: ImageSet(test, DataConfig(), p, torch.device("cpu")) for p in GUARDED]
    for i, case in enumerate(cases):
        with pytest.raises(SynaugError, match="test-split"):
            case()
    _assert_no_test(spy, _resolved(test.abspaths()))
    assert not any(spy.served.values()) and not any(spy.decoded.values())
    assert not any((tmp_path / x).exists() for x in "abcde")


def test_cli_train_and_finetune_never_read_the_test_rows_of_their_manifest(mixed, spy, tmp_path, capsys):
    """`synaug train` / `synaug finetune` on ONE file holding train, val and test rows (the
    README's train / finetune / evaluate example): the CLI keeps the train/val rows and says
    so; no test row reaches an image set or a decode."""
    from synaug.cli import main

    Manifest.concat([mixed["m"], mixed["test"]]).write(tmp_path / "M.parquet")
    (tmp_path / "t.yaml").write_text(
        "epochs: 1\nbatch_size: 8\nmodel: {width: 4}\nprogress: false\n"
        f"schedule: {{warmup_epochs: 0, milestones: [], factors: []}}\ndata: {{cache_dir: {mixed['cache']}}}\n")
    (tmp_path / "f.yaml").write_text(f"epochs: 1\nprogress: false\ndata: {{cache_dir: {mixed['cache']}}}\n")
    m = str(tmp_path / "M.parquet")
    assert main(["train", "-c", str(tmp_path / "t.yaml"), "--train-manifest", m, "--out", str(tmp_path / "tr")]) == 0
    assert main(["finetune", "-c", str(tmp_path / "f.yaml"), "--checkpoint", str(tmp_path / "tr"), "--manifest", m,
                 "--out", str(tmp_path / "ft")]) == 0
    assert capsys.readouterr().err.count("its 9 test rows are not read") == 2
    _assert_no_test(spy, _resolved(mixed["test"].abspaths()))
    train_rows = mixed["m"].split("train")
    assert spy.served["training"] == _resolved(train_rows.abspaths())
    assert spy.served["model selection"] == _resolved(mixed["val"].abspaths())
    assert spy.served["fine-tuning"] and spy.served["fine-tuning"] <= _resolved(mixed["real"].abspaths())
