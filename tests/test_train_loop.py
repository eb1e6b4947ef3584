"""Training loop: learning, every algorithm, checkpoints, resume, model selection, guard."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from synaug.config import validate
from synaug.errors import SynaugError
from synaug.manifest import Manifest
from synaug.train import TrainConfig, load_checkpoint, train_model
from synaug.train.config import ALGORITHMS, ScheduleConfig
from synaug.train.optim import lr_at
from synaug.train.toydata import make_toy_manifest


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("loopdata")
    groups = ["g0", "g1"]
    tr = make_toy_manifest(root, {(0, 0): 30, (0, 1): 6, (1, 0): 6, (1, 1): 14, (2, 0): 8, (2, 1): 4},
                           groups=groups, size=16, seed=0)
    syn = make_toy_manifest(root / "syn", {(1, 1): 10, (2, 0): 10}, num_classes=3, groups=groups, size=16,
                            seed=5, source="synthetic", prefix="s")
    val = make_toy_manifest(root, {(c, g): 4 for c in range(3) for g in range(2)}, groups=groups, size=16,
                            seed=1, split="val")
    test = make_toy_manifest(root, {(c, g): 4 for c in range(3) for g in range(2)}, groups=groups, size=16,
                             seed=2, split="test")
    train = Manifest.concat([tr, syn])
    return {"train": train, "val": val, "test": test, "cache": str(root / "cache")}


def cfg_for(data, **over) -> TrainConfig:
    base = {"epochs": 2, "batch_size": 16, "seed": 3, "model": {"width": 4}, "progress": False,
            "schedule": {"warmup_epochs": 1, "milestones": [], "factors": []},
            "optim": {"lr": 0.05}, "data": {"cache_dir": data["cache"]}}
    for k, v in over.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return TrainConfig.model_validate(base)


def _weights(path):
    return load_file(str(path))


def test_loss_decreases_on_a_learnable_problem(data, tmp_path):
    cfg = cfg_for(data, epochs=6, mix={"mixup": False}, optim={"lr": 0.05})
    res = train_model(data["train"], data["val"], cfg, tmp_path)
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < 0.6 * losses[0], losses
    assert res.history[-1]["val_top1"] > 0.5
    assert all(h["img_per_s"] > 0 for h in res.history)


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_every_algorithm_trains_with_mixup_and_synthetic_rows(data, tmp_path, algo):
    cfg = cfg_for(data, epochs=2, algorithm={"name": algo, "ldam": {"drw_epoch": 1},
                                             "weight_balancing": {"stage2_epochs": 1}},
                  mix={"mixup": True, "cutmix": True})
    res = train_model(data["train"], data["val"], cfg, tmp_path)
    expected = 3 if algo == "weight_balancing" else 2
    assert len(res.history) == expected
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in res.history)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["train_sources"] == {"real": 68, "synthetic": 20}
    if algo == "ldam_drw":
        assert res.model.head_kind == "cosine"
    if algo == "weight_balancing":
        assert res.history[-1]["phase"] == "head"


def test_weight_balancing_stage2_freezes_encoder_and_applies_max_norm(data, tmp_path):
    from synaug.train.algorithms import cosine_stepped_first, maxnorm_threshold

    cfg = cfg_for(data, epochs=1, select_metric="top1", keep_checkpoints=3,
                  algorithm={"name": "weight_balancing", "weight_balancing": {"stage2_epochs": 2}})
    res = train_model(data["train"], None, cfg, tmp_path)
    e0 = _weights(tmp_path / "epoch_0000.safetensors")   # end of stage 1
    last = _weights(tmp_path / "epoch_0002.safetensors")
    # the relative MaxNorm threshold is fixed from the stage-1 head, then every class vector is kept inside it
    t = maxnorm_threshold(e0["head.weight"].norm(dim=1), 0.1)
    assert last["head.weight"].norm(dim=1).max() <= t + 1e-5
    assert last["head.weight"].norm(dim=1).max() == pytest.approx(t, rel=1e-4)
    for k in e0:
        if k.startswith("encoder."):
            assert torch.equal(e0[k], last[k]), k
    # stage 2: lr 0.01, cosine, stepped at the start of each epoch (the reference's order)
    assert [h["lr"] for h in res.history[1:]] == pytest.approx([cosine_stepped_first(0.01, e, 2) for e in range(2)])
    assert res.history[1]["lr"] == pytest.approx(0.005) and res.history[2]["lr"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("variant", [
    {"algorithm": {"name": "group_dro"}, "mix": {"mixup": True}},
    {"optim": {"name": "adamw", "lr": 0.003}, "schedule": {"name": "cosine"}, "mix": {"cutmix": True},
     "algorithm": {"name": "resample"}},
])
def test_resume_after_a_kill_equals_an_uninterrupted_run(data, tmp_path, variant):
    cfg = cfg_for(data, epochs=3, **variant)
    full = train_model(data["train"], data["val"], cfg, tmp_path / "full")

    class Killed(Exception):
        pass

    def kill_after_first(row):
        if row["epoch"] == 0:
            raise Killed

    with pytest.raises(Killed):
        train_model(data["train"], data["val"], cfg, tmp_path / "cut", callbacks=[kill_after_first])
    assert json.loads((tmp_path / "cut" / "last.json").read_text())["epoch"] == 0
    seen = []
    resumed = train_model(data["train"], data["val"], cfg, tmp_path / "cut", callbacks=[seen.append])
    assert [r["epoch"] for r in seen] == [1, 2]  # continued, did not restart
    a, b = _weights(tmp_path / "full" / "epoch_0002.safetensors"), _weights(tmp_path / "cut" / "epoch_0002.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]
    assert full.best_epoch == resumed.best_epoch


def test_weight_balancing_resumes_inside_stage_2_with_its_threshold(data, tmp_path):
    cfg = cfg_for(data, epochs=1, algorithm={"name": "weight_balancing", "weight_balancing": {"stage2_epochs": 3}})
    train_model(data["train"], None, cfg, tmp_path / "full")

    class Killed(Exception):
        pass

    def kill(row):
        if row["epoch"] == 1:   # after the first stage-2 epoch: the threshold must come from the checkpoint
            raise Killed

    with pytest.raises(Killed):
        train_model(data["train"], None, cfg, tmp_path / "cut", callbacks=[kill])
    train_model(data["train"], None, cfg, tmp_path / "cut")
    a, b = _weights(tmp_path / "full" / "epoch_0003.safetensors"), _weights(tmp_path / "cut" / "epoch_0003.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_refuses_a_changed_config(data, tmp_path):
    train_model(data["train"], None, cfg_for(data, epochs=1), tmp_path)
    with pytest.raises(SynaugError, match="different config"):
        train_model(data["train"], None, cfg_for(data, epochs=1, optim={"lr": 0.01}), tmp_path)
    # --no-resume starts over
    res = train_model(data["train"], None, cfg_for(data, epochs=1, optim={"lr": 0.01}), tmp_path, resume=False)
    assert len(res.history) == 1


def test_checkpoint_round_trip_and_selection(data, tmp_path):
    res = train_model(data["train"], data["val"], cfg_for(data, epochs=3), tmp_path)
    assert res.best_epoch is not None
    vals = [h["val_top1"] for h in res.history]
    assert vals[res.best_epoch] == max(vals)
    state = json.loads((tmp_path / "last.json").read_text())
    assert state["best"]["epoch"] == res.best_epoch
    best = _weights(tmp_path / state["best"]["weights"])
    final = _weights(res.checkpoint)
    assert all(torch.equal(best[k], final[k]) for k in best)
    m = load_checkpoint(tmp_path)
    assert m.meta["classes"] == ["class0", "class1", "class2"]
    assert m.meta["real_train_class_counts"] == [36, 20, 12]
    assert m.meta["train_class_counts"] == [36, 30, 22]
    x = torch.randn(3, 3, 16, 16)
    res.model.eval()
    assert torch.allclose(m(x), res.model(x), atol=1e-5)
    state = json.loads((tmp_path / "last.json").read_text())
    assert state["epoch"] == 2 and state["optimizer"]["param_groups"][0]["momentum"] == 0.9
    assert (tmp_path / state["state"]).is_file()
    # only keep_checkpoints epoch files and the pointed-to best file remain
    assert sorted(p.name for p in tmp_path.glob("epoch_*")) == ["epoch_0002.safetensors", "epoch_0002.state.safetensors"]
    assert [p.name for p in tmp_path.glob("best_*")] == [f"best_{res.best_epoch:04d}.safetensors"]


def test_no_val_split_keeps_the_last_epoch(data, tmp_path):
    res = train_model(data["train"], None, cfg_for(data, epochs=2), tmp_path)
    assert res.best_epoch is None
    last = _weights(tmp_path / "epoch_0001.safetensors")
    final = _weights(res.checkpoint)
    assert all(torch.equal(last[k], final[k]) for k in last)


def test_training_refuses_test_rows(data, tmp_path):
    with pytest.raises(SynaugError, match="test-split"):
        train_model(Manifest.concat([data["train"], data["test"]]), None, cfg_for(data, epochs=1), tmp_path)
    with pytest.raises(SynaugError, match="model selection"):
        train_model(data["train"], data["test"], cfg_for(data, epochs=1), tmp_path)
    assert not (tmp_path / "last.json").exists()


def test_cifar_lt_recipe_schedule():
    cfg = TrainConfig()
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay, cfg.batch_size, cfg.epochs) == \
        (0.1, 0.9, 2e-4, 128, 200)
    lr = [lr_at(e, 0.1, 200, cfg.schedule) for e in range(200)]
    assert lr[0] == pytest.approx(0.02) and lr[4] == pytest.approx(0.1) and lr[5] == pytest.approx(0.1)
    assert lr[159] == pytest.approx(0.1) and lr[160] == pytest.approx(0.001)
    assert lr[179] == pytest.approx(0.001) and lr[180] == pytest.approx(0.00001)
    cos = ScheduleConfig(name="cosine", warmup_epochs=0, min_lr=0.0)
    assert lr_at(0, 1.0, 10, cos) == pytest.approx(1.0) and lr_at(5, 1.0, 10, cos) == pytest.approx(0.5)


def test_config_errors_are_one_line():
    with pytest.raises(SynaugError, match="unknown key 'optim.lrr'"):
        validate(TrainConfig, {"optim": {"lrr": 0.1}})
    with pytest.raises(SynaugError, match="algorithm.name"):
        validate(TrainConfig, {"algorithm": {"name": "focal"}})
    with pytest.raises(SynaugError, match="same length"):
        validate(TrainConfig, {"schedule": {"milestones": [1, 2], "factors": [0.1]}})


def test_bf16_autocast_trains(data, tmp_path):
    res = train_model(data["train"], None, cfg_for(data, epochs=2, amp="bf16", mix={"mixup": False}), tmp_path)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in res.history)
    assert res.history[-1]["loss"] < res.history[0]["loss"]


@pytest.mark.slow
def test_torch_compile_step_matches_eager(data, tmp_path):
    # torch.compile (inductor) costs 30-60 s cold on this CPU: slow-marked, and one compiled
    # variant only (no Mixup, the 88 rows in ONE batch: one forward + one backward graph).
    # Tolerance: |w_compiled - w_eager| <= 1e-5 + 1e-4 |w| for every parameter and buffer after
    # the step (measured <= 1.1e-6), loss within 1e-5 relative. One step, because this width-4
    # net is ill-conditioned after a first step at lr 0.05: a 1e-6 random weight perturbation
    # changes the next gradient by 3e-3 (measured eagerly), so later steps would measure the net,
    # not the compiler. channels_last is off: on this CPU oneDNN's channels_last fp32 backward is
    # itself 1-4 % (norm-relative) off an fp64 reference on this net's small gradients
    # (contiguous: 2e-5), which would swamp the comparison.
    over = dict(epochs=1, batch_size=88, mix={"mixup": False}, channels_last=False)
    eager = train_model(data["train"], data["val"], cfg_for(data, **over), tmp_path / "eager")
    comp = train_model(data["train"], data["val"], cfg_for(data, compile=True, **over), tmp_path / "compiled")
    assert json.loads((tmp_path / "compiled" / "summary.json").read_text())["step"]["compile"] is True
    assert comp.history[0]["loss"] == pytest.approx(eager.history[0]["loss"], rel=1e-5)
    a, b = _weights(tmp_path / "eager" / "epoch_0000.safetensors"), _weights(tmp_path / "compiled" / "epoch_0000.safetensors")
    off = {k: float(((a[k] - b[k]).abs() - 1e-4 * a[k].abs()).max()) for k in a if a[k].is_floating_point()}
    assert max(off.values()) <= 1e-5, sorted(off.items(), key=lambda kv: kv[1])[-3:]
    init = build_initial(data)
    assert max(float((a[k] - init[k]).abs().max()) for k in init) > 1e-3  # the step moved the weights


def build_initial(data):
    from synaug.train.loop import build_model, seed_for

    torch.manual_seed(seed_for(cfg_for(data).seed, 0xA11))
    return {f"{k}": v for k, v in build_model(cfg_for(data), 3).state_dict().items() if v.is_floating_point()}


def test_sigkill_mid_run_then_resume_matches_uninterrupted(data, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from synaug.config import save_resolved

    cfg = cfg_for(data, epochs=6)
    save_resolved(cfg, tmp_path / "train.yaml")
    data["train"].write(tmp_path / "train.parquet")
    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "synaug.cli", "train", "-c", str(tmp_path / "train.yaml"),
                             "--train-manifest", str(tmp_path / "train.parquet"), "--out", str(run)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "last.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.loads((run / "last.json").read_text())["epoch"]
    assert done < 5, "the run finished before it could be killed"
    resumed = train_model(data["train"], None, cfg, run)
    full = train_model(data["train"], None, cfg, tmp_path / "full")
    a, b = _weights(resumed.checkpoint), _weights(full.checkpoint)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["epoch"] for h in resumed.history] == list(range(6))
