"""Synthetic-aware training (``train.synthetic``) and step 3 beyond the head: each option changes
what it should, checked against a hand computation on tiny data."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from synaug.errors import SynaugError
from synaug.manifest import Manifest
from synaug.train import FinetuneConfig, TrainConfig, finetune_last_layer, load_checkpoint, train_model
from synaug.train.algorithms import DataInfo, build_algorithm
from synaug.train.data import ImageSet
from synaug.train.finetune import last_blocks
from synaug.train.loop import build_model
from synaug.train.optim import build_optimizer
from synaug.train.step import MIXUP, NONE, TrainStep, draw_mix_plan
from synaug.train.synthetic import (SplitBatchNorm2d, color_match_, epoch_order, share_at, share_order,
                                    split_batchnorm)
from synaug.train.toydata import make_toy_manifest

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    real = make_toy_manifest(root, [10, 6, 4], size=16, seed=0)
    syn = make_toy_manifest(root / "s", [2, 6, 8], num_classes=3, size=16, seed=4, source="synthetic", prefix="s")
    val = make_toy_manifest(root, [3, 3, 3], size=16, seed=1, split="val")
    return {"train": Manifest.concat([real, syn]), "val": val, "cache": str(root / "cache")}


def _cfg(toy, **over) -> TrainConfig:
    base = {"epochs": 1, "batch_size": 16, "seed": 3, "model": {"width": 4}, "progress": False,
            "channels_last": False, "mix": {"mixup": False}, "data": {"cache_dir": toy["cache"]},
            "schedule": {"warmup_epochs": 0, "milestones": [], "factors": []}}
    base.update(over)
    return TrainConfig.model_validate(base)


def _step(m: Manifest, cfg: TrainConfig):
    dev = torch.device("cpu")
    images = ImageSet(m, cfg.data, "training", dev, cfg.channels_last)
    info = DataInfo(m.df["label"].to_numpy(), m.df["group"].to_numpy(), m.num_classes, 0, cfg.epochs)
    algo = build_algorithm(cfg.algorithm, info, dev)
    torch.manual_seed(0)
    model = build_model(cfg, m.num_classes)
    if cfg.synthetic.separate_bn:
        split_batchnorm(model)
    opt = build_optimizer(model.parameters(), cfg.optim)
    step = TrainStep(model, model, opt, algo, images, cfg, dev)
    step.set_optimizer(opt)
    return step, model, images


def _inputs(images, chunk, cfg, aug_seed):
    """The step's augmented, normalised batch, drawn as the step draws it (crop offsets, flips)."""
    aug = np.random.default_rng(aug_seed)
    b = len(chunk)
    oy, ox = aug.integers(0, 9, (1, b))[0], aug.integers(0, 9, (1, b))[0]
    flip = (aug.random((1, b)) < 0.5)[0]
    padded = F.pad(images.images[chunk].float(), (4, 4, 4, 4))
    crops = torch.stack([padded[i, :, oy[i]:oy[i] + 16, ox[i]:ox[i] + 16] for i in range(b)])
    crops = torch.stack([c.flip(-1) if f else c for c, f in zip(crops, flip)])
    mean = torch.tensor(cfg.augment.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.augment.std).view(1, 3, 1, 1)
    return (crops / 255.0 - mean) / std


def _one_step_loss(step, model, images, chunk, cfg):
    """(loss the step reported, the model before the step)."""
    before = build_model(cfg, images.manifest.num_classes)
    before.load_state_dict(model.state_dict())
    model.train()
    step.run_epoch(0, [chunk], np.random.default_rng(7), np.random.default_rng(8), torch.Generator(), True)
    return float(step.stats[0]) / len(chunk), before


# ---------------------------------------------------------------------------- loss weight / smoothing
@pytest.mark.parametrize("mixup", [False, True], ids=["unmixed", "mixup"])
def test_weighted_loss_equals_a_hand_computation(toy, mixup):
    m = toy["train"]
    w = 0.3
    cfg = _cfg(toy, mix={"mixup": mixup}, synthetic={"loss_weight": w})
    step, model, images = _step(m, cfg)
    chunk = torch.tensor([0, 1, 12, 17, 20, 22, 25, 30, 31, 2, 3, 21, 26, 33, 14, 15])   # real and synthetic rows
    got, before = _one_step_loss(step, model, images, chunk, cfg)
    x = _inputs(images, chunk, cfg, 7)
    y = images.labels[chunk]
    s = (m.df["source"].to_numpy()[chunk.numpy()] == "synthetic").astype(np.float32)
    assert 0 < s.sum() < len(s)
    row_w = torch.from_numpy(1 + (w - 1) * s)                    # real 1, synthetic w
    onehot = F.one_hot(y, 3).float()
    plan = draw_mix_plan(np.random.default_rng(8), [len(chunk)], (16, 16), cfg.mix, True)
    if mixup:
        assert plan.kind[0] == MIXUP
        lam, pair = float(plan.lab_w[0]), torch.from_numpy(plan.pair[0])
        x = lam * x + (1 - lam) * x[pair]
        onehot = lam * onehot + (1 - lam) * onehot[pair]
        row_w = lam * row_w + (1 - lam) * row_w[pair]               # a mixed row weighs what its label is made of
    else:
        assert plan.kind[0] == NONE
    before.train()
    per_row = -(onehot * F.log_softmax(before(x), 1)).sum(1)
    hand = float((row_w * per_row).sum().detach() / row_w.sum())
    plain = float(per_row.mean().detach())
    assert abs(got - hand) < 1e-5, (got, hand)
    assert abs(hand - plain) > 1e-3                                # the weight really changed the loss


def test_label_smoothing_only_for_synthetic_rows(toy):
    m = toy["train"]
    eps = 0.2
    cfg = _cfg(toy, synthetic={"label_smoothing": eps})
    step, model, images = _step(m, cfg)
    chunk = torch.arange(8, 24)
    got, before = _one_step_loss(step, model, images, chunk, cfg)
    x = _inputs(images, chunk, cfg, 7)
    s = torch.from_numpy((m.df["source"].to_numpy()[chunk.numpy()] == "synthetic").astype(np.float32))[:, None]
    target = F.one_hot(images.labels[chunk], 3).float() * (1 - eps * s) + eps * s / 3
    before.train()
    hand = float(-(target * F.log_softmax(before(x), 1)).sum(1).mean().detach())
    assert abs(got - hand) < 1e-5, (got, hand)
    hard = float(F.cross_entropy(before(x), images.labels[chunk]).detach())
    assert abs(hand - hard) > 1e-3


def test_loss_weight_needs_per_row_losses(toy, tmp_path):
    cfg = _cfg(toy, synthetic={"loss_weight": 0.5}, algorithm={"name": "balanced_softmax"})
    with pytest.raises(SynaugError, match="loss_weight needs per-row losses"):
        train_model(toy["train"], None, cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_defaults_leave_the_config_dump_unchanged():
    """New keys at their defaults are not in the dump: runs cached before they existed stay valid."""
    from synaug.config import dump

    assert "synthetic" not in dump(TrainConfig()) and "train_blocks" not in dump(FinetuneConfig())
    assert not {"sampling", "samples_per_epoch"} & set(dump(FinetuneConfig()))
    assert dump(FinetuneConfig(sampling="class_balanced"))["sampling"] == "class_balanced"
    assert dump(TrainConfig(synthetic={"loss_weight": 0.5}))["synthetic"]["loss_weight"] == 0.5
    for bad in ({"loss_weight": 0}, {"loss_weight": -1}, {"label_smoothing": 1.0}, {"label_smoothing": -0.1},
                {"batch_share_end": 0.2}):
        with pytest.raises(ValueError):
            TrainConfig.model_validate({"synthetic": bad})


# ---------------------------------------------------------------------------- batch share
def test_batch_share_sampler_keeps_the_ratio_in_every_batch():
    is_syn = np.array([True] * 70 + [False] * 30)
    g = torch.Generator().manual_seed(0)
    order = share_order(is_syn, 0.25, 16, g)
    assert len(order) == 100
    batches = order.split(16)
    for b in batches[:-1]:
        assert int(is_syn[b.numpy()].sum()) == 4                  # round(0.25 * 16)
    assert int(is_syn[batches[-1].numpy()].sum()) == 1            # tail of 4 rows: round(0.25 * 4)
    real_seen = np.bincount(order.numpy()[~is_syn[order.numpy()]], minlength=100)[~is_syn]
    assert real_seen.min() >= 2 and real_seen.max() <= 3          # the real stream cycles evenly (75 draws of 30)
    assert torch.equal(order, share_order(is_syn, 0.25, 16, torch.Generator().manual_seed(0)))   # seeded
    from synaug.train.config import SyntheticConfig

    sched = SyntheticConfig(batch_share=0.9, batch_share_end=0.25)
    assert [round(share_at(sched, e, 5), 4) for e in range(5)] == [0.9, 0.7375, 0.575, 0.4125, 0.25]
    assert share_at(SyntheticConfig(), 0, 5) is None
    with pytest.raises(SynaugError, match="needs synthetic training rows"):
        share_order(np.zeros(10, bool), 0.5, 4, g)


def test_batch_share_trains(toy, tmp_path):
    cfg = _cfg(toy, epochs=2, synthetic={"batch_share": 0.75, "batch_share_end": 0.25})
    res = train_model(toy["train"], toy["val"], cfg, tmp_path / "run")
    assert len(res.history) == 2 and np.isfinite(res.history[-1]["loss"])


# ---------------------------------------------------------------------------- rotating synthetic rows
def _rotating(toy, rounds: int) -> Manifest:
    """The toy training rows with the synthetic ones split into ``rounds`` rounds per class."""
    m = Manifest(toy["train"].df.copy(), toy["train"].classes, toy["train"].roots, toy["train"].groups)
    syn = (m.df["source"] == "synthetic").to_numpy()
    m.df["select_round"] = np.nan
    m.df.loc[syn, "select_round"] = m.df[syn].groupby("label").cumcount().to_numpy() % rounds
    return m


@pytest.mark.parametrize("share", [None, 0.5])
def test_rotating_rows_one_round_per_epoch(toy, share):
    """With ``select_round`` every epoch trains on all real rows and exactly one round of the
    synthetic ones; over ``rounds`` epochs every synthetic row is used once. Without the column the
    order is the plain shuffle / batch-share order, draw for draw."""
    from synaug.train.config import SyntheticConfig
    from synaug.train.data import epoch_order as shuffle

    cfg = SyntheticConfig(batch_share=share)
    m = _rotating(toy, 2)
    images = ImageSet(m, _cfg(toy).data, "training", torch.device("cpu"), False)
    rounds = m.df["select_round"].to_numpy()
    real = set(np.flatnonzero(np.isnan(rounds)))
    used = []
    for e in range(4):
        order = epoch_order(images, cfg, e, 4, 8, torch.Generator().manual_seed(e)).numpy()
        rows = set(order.tolist())
        if share is None:                                             # a shuffle: every real row, once
            assert len(order) == len(rows) and real <= rows
        else:                                                         # the share, within the epoch's rows
            assert all(int((~np.isnan(rounds[b.numpy()])).sum()) == round(share * len(b))
                       for b in torch.as_tensor(order).split(8))
        syn = rows - real
        assert {rounds[i] for i in syn} == {e % 2}                    # one round: epoch mod rounds
        assert len(order) == len(real) + int((rounds == e % 2).sum())
        used.append(syn)
    assert used[0] | used[1] == set(np.flatnonzero(~np.isnan(rounds)))   # two epochs: every synthetic row
    assert used[0] == used[2] and used[0].isdisjoint(used[1])
    plain = ImageSet(toy["train"], _cfg(toy).data, "training", torch.device("cpu"), False)
    got = epoch_order(plain, cfg, 1, 4, 8, torch.Generator().manual_seed(7))
    want = (shuffle(len(plain), torch.Generator().manual_seed(7)) if share is None else
            share_order(plain.synthetic.numpy() > 0, share, 8, torch.Generator().manual_seed(7)))
    assert torch.equal(got, want)
    with pytest.raises(SynaugError, match="re-samples all rows"):
        epoch_order(images, cfg, 0, 4, 8, torch.Generator(), torch.ones(len(images)))


def test_rotating_rows_train(toy, tmp_path):
    m = _rotating(toy, 2)
    res = train_model(m, toy["val"], _cfg(toy, epochs=2), tmp_path / "run")
    import json

    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    n_epoch = 20 + int((m.df["select_round"] == 0).sum())
    assert s["synthetic_rounds"] == 2 and s["rows_per_epoch"] == n_epoch and s["num_train"] == len(m)
    assert [h["images"] for h in res.history] == [n_epoch, 20 + int((m.df["select_round"] == 1).sum())]


# ---------------------------------------------------------------------------- separate batch norm
def test_split_batchnorm_keeps_statistics_apart():
    torch.manual_seed(0)
    x = torch.randn(12, 4, 5, 5)
    x[6:] = x[6:] * 3 + 2                                          # "synthetic" rows: another distribution
    route = torch.tensor([0.0] * 6 + [1.0] * 6)
    split = SplitBatchNorm2d(4)
    split.route = route
    split.train()
    out = split(x)
    real_bn, syn_bn = nn.BatchNorm2d(4).train(), nn.BatchNorm2d(4).train()
    assert torch.allclose(out[:6], real_bn(x[:6]), atol=1e-5)     # each group by its own batch statistics
    assert torch.allclose(out[6:], syn_bn(x[6:]), atol=1e-5)
    assert torch.allclose(split.running_mean, real_bn.running_mean, atol=1e-6)    # real rows only
    assert torch.allclose(split.running_var, real_bn.running_var, atol=1e-5)
    assert torch.allclose(split.syn_running_mean, syn_bn.running_mean, atol=1e-6)
    assert not torch.allclose(split.running_mean, split.syn_running_mean, atol=0.1)
    # all rows real: a plain BatchNorm2d
    split2, plain = SplitBatchNorm2d(4).train(), nn.BatchNorm2d(4).train()
    split2.route = torch.zeros(12)
    assert torch.allclose(split2(x), plain(x), atol=1e-5)
    assert torch.allclose(split2.running_var, plain.running_var, atol=1e-5)
    # eval: the real running statistics, as a plain BatchNorm2d with the same state
    split.eval()
    plain.load_state_dict(split.state_dict())
    assert set(split.state_dict()) == set(plain.state_dict())     # the synthetic statistics are not saved
    assert torch.equal(split(x), plain.eval()(x))


def test_separate_bn_in_the_step_and_the_test_path(toy, tmp_path):
    m = toy["train"]
    cfg = _cfg(toy, synthetic={"separate_bn": True})
    step, model, images = _step(m, cfg)
    assert isinstance(model.encoder.bn1, SplitBatchNorm2d)
    chunk = torch.arange(8, 24)
    start = model.encoder.bn1.running_mean.clone()
    _one_step_loss(step, model, images, chunk, cfg)
    # the stem's BatchNorm sees conv1 of the batch: its running mean moved by the REAL rows' mean only
    x = _inputs(images, chunk, cfg, 7)
    s = m.df["source"].to_numpy()[chunk.numpy()] == "synthetic"
    torch.manual_seed(0)
    ref = build_model(cfg, 3)                                      # the same initial weights as the step's model
    with torch.no_grad():
        h = ref.encoder.conv1(x)
    real_mean, syn_mean = h[~s].mean((0, 2, 3)), h[s].mean((0, 2, 3))
    bn = model.encoder.bn1
    assert torch.allclose(bn.running_mean, 0.9 * start + 0.1 * real_mean, atol=1e-5)
    assert torch.allclose(bn.syn_running_mean, 0.1 * syn_mean, atol=1e-5)
    # the test path: a trained model is saved and evaluated as a plain model with the real statistics
    res = train_model(m, toy["val"], _cfg(toy, synthetic={"separate_bn": True}), tmp_path / "run")
    loaded = load_checkpoint(res.checkpoint)
    assert not any(isinstance(mod, SplitBatchNorm2d) for mod in loaded.modules())
    assert type(loaded.encoder.bn1) is nn.BatchNorm2d


# ---------------------------------------------------------------------------- colour statistics
def _stats(images, rows):
    x = images[torch.from_numpy(np.flatnonzero(rows))].double()
    return x.mean((0, 2, 3)), x.std((0, 2, 3))


@pytest.mark.parametrize("mode", ["global", "class"])
def test_color_match_gives_the_target_statistics(mode):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 40)
    is_syn = np.tile(np.r_[np.zeros(20, bool), np.ones(20, bool)], 2)
    base = np.where(labels[:, None] == 0, [[90, 120, 150]], [[160, 100, 60]])
    px = base[:, :, None, None] + rng.normal(0, 20, (80, 3, 8, 8))
    px[is_syn & (labels == 0)] = px[is_syn & (labels == 0)] * 1.4 + 25    # synthetic class 0: brighter
    px[is_syn & (labels == 1)] = px[is_syn & (labels == 1)] * 0.8 - 20    # synthetic class 1: darker
    images = torch.from_numpy(np.clip(px, 0, 255).round().astype(np.uint8))
    real_before = images[~torch.from_numpy(is_syn)].clone()
    report = color_match_(images, is_syn, labels, mode, min_real=10)
    assert torch.equal(images[~torch.from_numpy(is_syn)], real_before)    # real images untouched
    groups = [np.ones(80, bool)] if mode == "global" else [labels == 0, labels == 1]
    for g in groups:
        mr, sr = _stats(images, g & ~is_syn)
        ms, ss = _stats(images, g & is_syn)
        assert torch.allclose(ms, mr, atol=0.6) and torch.allclose(ss, sr, rtol=0.02), (mode, ms, mr, ss, sr)
    if mode == "global":  # one map for both classes: the class means stay apart
        m0, _ = _stats(images, (labels == 0) & is_syn)
        r0, _ = _stats(images, (labels == 0) & ~is_syn)
        assert (m0 - r0).abs().max() > 5
    assert report["mode"] == mode and set(report["classes"]) == {0, 1}


def test_color_match_in_training(toy, tmp_path):
    cfg = _cfg(toy, synthetic={"color_match": "global"})
    res = train_model(toy["train"], None, cfg, tmp_path / "run")
    import json

    s = json.loads((res.out_dir / "summary.json").read_text())
    st = s["synthetic"]["color_match_stats"]
    gap = lambda k: float(np.abs(np.subtract(st[k], st["real"])).max())  # noqa: E731
    assert gap("synthetic_after") < gap("synthetic_before") / 3, st   # (clipping at 0 / 255 leaves a little)


# ---------------------------------------------------------------------------- step 3 beyond the head
def test_last_block_finetuning_leaves_earlier_blocks_bit_identical(toy, tmp_path):
    torch.manual_seed(0)
    model = build_model(_cfg(toy), 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = FinetuneConfig.model_validate({"epochs": 3, "batch_size": 8, "lr": 0.05, "progress": False,
                                         "train_blocks": 1, "data": {"cache_dir": toy["cache"]}})
    out = finetune_last_layer(model, toy["train"], cfg, tmp_path / "ft")
    last = last_blocks(model.encoder, 1)[0]
    assert last is model.encoder.layer3[-1]
    last_names = {f"encoder.layer3.{len(model.encoder.layer3) - 1}.{k}" for k in last.state_dict()}
    after = out.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing was trained"
    assert changed <= last_names | {"head.weight", "head.bias"}, changed - last_names
    assert {"head.weight"} <= changed and any(k.endswith("conv1.weight") for k in changed & last_names)
    assert not any("running" in k for k in changed)                # BatchNorm statistics stay fixed
    assert load_checkpoint(tmp_path / "ft").meta["finetune"]["train_blocks"] == 1
    with pytest.raises(SynaugError, match="has only 15 blocks"):
        last_blocks(model.encoder, 16)
    with pytest.raises(ValueError, match="train_blocks works with mode finetune / retrain"):
        FinetuneConfig(mode="dfr", train_blocks=1)
