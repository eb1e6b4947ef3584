"""Baselines and last-layer methods against transcriptions of their reference code (issue 11).

Each test re-computes a small case the way the reference repository does it (the function is
named in the test) and compares synaug's result with it:

* DFR^Tr_Val — ``PolinaKirichenko/deep_feature_reweighting/dfr_evaluate_spurious.py``
  (``dfr_on_validation_tune`` + ``dfr_on_validation_eval``);
* Weight Balancing — ``ShadeAlsha/LTR-weight-balancing`` (``utils/regularizers.py:
  MaxNorm_via_PGD``, ``utils/class_balanced_loss.py:CB_loss``, ``demo2_second-stage-training.py``
  with ``utils/trainval.py:train_model``'s scheduler order);
* Group-DRO — ``kohpangwei/group_DRO`` (``loss.py:LossComputer``, ``data/dro_dataset.py:
  DRODataset.get_loader`` with ``reweight_groups``);
* Waterbirds transforms — ``deep_feature_reweighting/wb_data.py:get_transform_cub``;
* inter-class image translation — the paper (Sec. 4, Table 5): guides are "random samples in
  the dataset ... regardless of the class".
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synaug.train.algorithms import (DataInfo, build_algorithm, cb_softmax_loss, group_balanced_weights,
                                     max_norm_, maxnorm_threshold)
from synaug.train.config import AlgorithmConfig

pytestmark = pytest.mark.usefixtures("one_thread")


# =============================================================================== DFR^Tr_Val
def _ref_logreg(c):
    from sklearn.linear_model import LogisticRegression

    # the reference: LogisticRegression(penalty="l1", C=c, solver="liblinear", class_weight=...);
    # sklearn >= 1.8 spells penalty="l1" as l1_ratio=1
    return LogisticRegression(l1_ratio=1.0, C=c, solver="liblinear", class_weight={0: 1.0, 1: 1.0})


def _ref_dfr_tr_val(emb, y, g, c_options, num_retrains=20):
    """dfr_evaluate_spurious.py as the script runs DFR on validation for Waterbirds:
    dfr_on_validation_tune(balance_val=True, add_train=False, num_retrains=1), then
    dfr_on_validation_eval(c, num_retrains=20, balance_val=True, add_train=False), both
    drawing from the global np.random state. Returns (c, mean coef, mean intercept)."""
    from sklearn.preprocessing import StandardScaler

    # ---- dfr_on_validation_tune
    worst_accs = {}
    x_val, y_val, g_val = emb["val"], y["val"], g["val"]
    n_val = len(x_val) // 2
    idx = np.arange(len(x_val))
    np.random.shuffle(idx)
    x_vt, y_vt, g_vt = x_val[idx[n_val:]], y_val[idx[n_val:]], g_val[idx[n_val:]]
    n_groups = np.max(g_vt) + 1
    g_idx = [np.where(g_vt == k)[0] for k in range(n_groups)]
    min_g = np.min([len(k) for k in g_idx])
    for k in g_idx:
        np.random.shuffle(k)
    x_vt = np.concatenate([x_vt[k[:min_g]] for k in g_idx])
    y_vt = np.concatenate([y_vt[k[:min_g]] for k in g_idx])
    x_ho, y_ho, g_ho = x_val[idx[:n_val]], y_val[idx[:n_val]], g_val[idx[:n_val]]
    x_tr = np.concatenate([emb["train"][:0], x_vt])
    y_tr = np.concatenate([y["train"][:0], y_vt])
    scaler = StandardScaler()
    x_tr = scaler.fit_transform(x_tr)
    x_ho = scaler.transform(x_ho)
    for c in c_options:
        lr = _ref_logreg(c).fit(x_tr, y_tr)
        preds = lr.predict(x_ho)
        worst_accs[c] = np.min([(preds == y_ho)[g_ho == k].mean() for k in range(n_groups)])
    ks, vs = list(worst_accs.keys()), list(worst_accs.values())
    c = ks[np.argmax(vs)]
    # ---- dfr_on_validation_eval
    coefs, intercepts = [], []
    scaler = StandardScaler()
    scaler.fit(emb["train"])
    for _ in range(num_retrains):
        x_val, y_val, g_val = emb["val"], y["val"], g["val"]
        n_groups = np.max(g_val) + 1
        g_idx = [np.where(g_val == k)[0] for k in range(n_groups)]
        min_g = np.min([len(k) for k in g_idx])
        for k in g_idx:
            np.random.shuffle(k)
        x_val = np.concatenate([x_val[k[:min_g]] for k in g_idx])
        y_val = np.concatenate([y_val[k[:min_g]] for k in g_idx])
        train_idx = np.arange(len(emb["train"]))
        np.random.shuffle(train_idx)
        train_idx = train_idx[:0]
        x_tr = np.concatenate([emb["train"][train_idx], x_val])
        y_tr = np.concatenate([y["train"][train_idx], y_val])
        lr = _ref_logreg(c).fit(scaler.transform(x_tr), y_tr)
        coefs.append(lr.coef_)
        intercepts.append(lr.intercept_)
    return c, np.mean(coefs, axis=0), np.mean(intercepts, axis=0), scaler


def _spurious_features(seed=0):
    """Waterbirds-like embeddings: group = 2 * y + place, an unbalanced validation split."""
    rng = np.random.RandomState(seed)

    def draw(counts):
        g = np.concatenate([np.full(n, k) for k, n in enumerate(counts)])
        yy, place = g // 2, g % 2
        x = (rng.normal(0, 1, (len(g), 6)) + np.outer(yy, [1.2, 0, 0.3, 0, 0, 0])
             + np.outer(place, [0, 2.0, 0, 0, 0.5, 0]))
        return x.astype(np.float32), yy, g

    xt, yt, gt = draw([150, 8, 7, 60])          # training: 95 % majority groups
    xv, yv, gv = draw([40, 12, 11, 30])         # validation
    xs, ys, gs = draw([30, 30, 30, 30])         # test
    return ({"train": xt, "val": xv, "test": xs}, {"train": yt, "val": yv, "test": ys},
            {"train": gt, "val": gv, "test": gs})


@pytest.mark.parametrize("seed", [0, 7])
def test_dfr_tr_val_equals_the_reference_script(seed):
    from synaug.train.finetune import dfr_tr_val

    emb, y, g = _spurious_features(seed)
    Cs = [1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01]  # the script's C_OPTIONS for Waterbirds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.random.seed(seed)
        c_ref, coef_ref, int_ref, scaler_ref = _ref_dfr_tr_val(emb, y, g, Cs)
        ours = dfr_tr_val(emb["train"], emb["val"], y["val"], g["val"], Cs, repeats=20, seed=seed)
    assert ours["C"] == c_ref
    assert np.array_equal(ours["coef"], coef_ref) and np.array_equal(ours["intercept"], int_ref)
    assert np.allclose(ours["mean"], scaler_ref.mean_) and np.allclose(ours["scale"], scaler_ref.scale_)
    # the scaler is the TRAINING features' (not the validation draw's)
    assert np.allclose(ours["mean"], emb["train"].mean(0), atol=1e-5)
    # test predictions of the averaged model agree
    z_ref = scaler_ref.transform(emb["test"]) @ coef_ref.T + int_ref
    z = ((emb["test"] - ours["mean"]) / ours["scale"]) @ ours["coef"].T + ours["intercept"]
    assert np.array_equal(z_ref > 0, z > 0)
    # the fit is group-balanced over the validation split: min group count = 11 rows per group
    assert ours["per_group"] == 11 and ours["groups"] == 4


def test_dfr_tr_val_picks_C_by_worst_group_on_the_held_out_half():
    from synaug.train.finetune import dfr_tr_val

    emb, y, g = _spurious_features(3)
    res = dfr_tr_val(emb["train"], emb["val"], y["val"], g["val"], [1.0, 0.01], repeats=2, seed=3)
    assert set(res["scores"]) == {1.0, 0.01}
    assert res["C"] == max([1.0, 0.01], key=lambda c: (res["scores"][c], c == 1.0))
    assert all(0.0 <= v <= 1.0 for v in res["scores"].values())


# ========================================================================= Weight Balancing
class _RefMaxNorm:
    """utils/regularizers.py:MaxNorm_via_PGD (LpNorm=2, tau=1) on a layer's (weight, bias)."""

    def __init__(self, thresh):
        self.thresh = thresh

    def set_per_layer_thresh(self, layers):
        self.per_layer = []
        for p in layers:
            if p.dim() <= 1:
                self.per_layer.append(float("inf"))
                continue
            norms = torch.linalg.norm(p.reshape(p.shape[0], -1), ord=2, dim=1).unsqueeze(-1)
            self.per_layer.append(norms.min() + self.thresh * (norms.max() - norms.min()))

    def pgd(self, layers):
        for i, p in enumerate(layers):
            vec = p.data.reshape(p.shape[0], -1)
            norms = torch.linalg.norm(vec, ord=2, dim=1).unsqueeze(-1)
            scaling = torch.ones_like(p.data)
            idx = (norms > self.per_layer[i]).squeeze()
            tmp = self.per_layer[i] / norms[idx].squeeze()
            for _ in range(len(scaling.shape) - 1):
                tmp = tmp.unsqueeze(-1)
            scaling[idx] = scaling[idx] * tmp
            p.data[idx] = scaling[idx] * p.data[idx]


def _ref_cb_loss_softmax(labels, logits, samples_per_cls, no_of_classes, beta):
    """utils/class_balanced_loss.py:CB_loss(labels, logits, samples_per_cls, C, "softmax", beta, ...)."""
    effective_num = 1.0 - np.power(beta, samples_per_cls)
    weights = (1.0 - beta) / np.array(effective_num)
    weights = weights / np.sum(weights) * no_of_classes
    onehot = F.one_hot(labels, no_of_classes).float()
    weights = torch.tensor(weights).float().unsqueeze(0).repeat(onehot.shape[0], 1) * onehot
    weights = weights.sum(1).unsqueeze(1).repeat(1, no_of_classes)
    return F.binary_cross_entropy(input=logits.softmax(dim=1), target=onehot, weight=weights)


def _wb(counts, epochs=3, **wb):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    info = DataInfo(labels, np.full(len(labels), -1), len(counts), 0, epochs)
    cfg = AlgorithmConfig.model_validate({"name": "weight_balancing", "weight_balancing": wb})
    return build_algorithm(cfg, info, torch.device("cpu"))


def test_maxnorm_threshold_and_projection_equal_max_norm_via_pgd():
    torch.manual_seed(0)
    fc = torch.nn.Linear(8, 10)
    with torch.no_grad():
        fc.weight.mul_(torch.linspace(0.2, 3.0, 10)[:, None])  # spread-out class norms
    ref = _RefMaxNorm(0.1)
    w_ref, b_ref = fc.weight.detach().clone(), fc.bias.detach().clone()
    ref.set_per_layer_thresh([w_ref, b_ref])
    norms = fc.weight.detach().norm(dim=1)
    t = maxnorm_threshold(norms, ratio=0.1)
    assert t == pytest.approx(float(ref.per_layer[0]), rel=1e-6)
    assert t == pytest.approx(float(norms.min() + 0.1 * (norms.max() - norms.min())), rel=1e-6)
    ref.pgd([w_ref, b_ref])
    w = fc.weight.detach().clone()
    max_norm_(w, t)
    assert torch.allclose(w, w_ref, atol=1e-6)
    assert torch.equal(b_ref, fc.bias.detach())  # the bias is never constrained


def test_weight_balancing_stage2_threshold_loss_and_schedule_follow_the_reference():
    counts = [60, 20, 6, 2]
    algo = _wb(counts, epochs=3)
    assert algo.extra_epochs() == 10 and algo.head_phase_optim() == {"lr": 0.01, "weight_decay": 0.1}

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(5, 4)

    torch.manual_seed(1)
    m = M()
    with torch.no_grad():
        m.head.weight.mul_(torch.tensor([3.0, 1.5, 0.7, 0.3])[:, None])
    ref = _RefMaxNorm(0.1)
    w_ref = m.head.weight.detach().clone()
    ref.set_per_layer_thresh([w_ref, m.head.bias.detach().clone()])
    algo.start_phase(m, "head")                       # threshold fixed when stage 2 starts
    assert algo.threshold == pytest.approx(float(ref.per_layer[0]), rel=1e-6)
    with torch.no_grad():
        m.head.weight.mul_(1.5)                       # a stage-2 step grows the norms ...
        w_ref.mul_(1.5)
    algo.after_step(m, 3)                             # ... the reference projects per epoch, not per step
    assert torch.equal(m.head.weight.detach(), w_ref)
    algo.after_epoch(m, 2)                            # stage 1: untouched
    assert torch.equal(m.head.weight.detach(), w_ref)
    algo.after_epoch(m, 3)
    ref.pgd([w_ref, m.head.bias.detach().clone()])
    assert torch.allclose(m.head.weight.detach(), w_ref, atol=1e-6)
    # the class-balanced softmax loss of CB_loss, in stage 2 only
    torch.manual_seed(2)
    z, y = torch.randn(7, 4), torch.tensor([0, 1, 2, 3, 3, 0, 2])
    assert algo.loss(z, y, None, 3).item() == pytest.approx(_ref_cb_loss_softmax(y, z, counts, 4, 0.9999).item(),
                                                           rel=1e-5)
    assert algo.loss(z, y, None, 2).item() == pytest.approx(F.cross_entropy(z, y).item(), rel=1e-6)
    # lr 0.01 cosine over 10 epochs, scheduler stepped at the start of every epoch (train_model)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01, momentum=0.9, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 10, eta_min=0.0)
    ref_lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(10):
            sched.step()
            ref_lrs.append(opt.param_groups[0]["lr"])
    assert [algo.head_lr(e, 0.1) for e in range(10)] == pytest.approx(ref_lrs, abs=1e-12)
    # the threshold survives a checkpoint
    fresh = _wb(counts, epochs=3)
    fresh.load_state_dict(algo.state_dict())
    assert fresh.threshold == algo.threshold


def test_cb_softmax_loss_matches_cb_loss_for_hard_and_one_hot_soft_targets():
    counts = [100, 10, 3]
    w = _wb(counts).weight
    torch.manual_seed(3)
    z, y = torch.randn(5, 3), torch.tensor([0, 2, 1, 1, 0])
    ref = _ref_cb_loss_softmax(y, z, counts, 3, 0.9999).item()
    assert cb_softmax_loss(z, y, w).item() == pytest.approx(ref, rel=1e-5)
    assert cb_softmax_loss(z, F.one_hot(y, 3).float(), w).item() == pytest.approx(ref, rel=1e-5)


def test_weight_balancing_named_options_keep_the_earlier_behaviour():
    algo = _wb([50, 5], epochs=1, max_norm="absolute", max_norm_radius=0.5, project_every="step",
               stage2_loss="weighted_ce", stage2_schedule="constant", stage2_lr=0.005)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(3, 2)

    m = M()
    with torch.no_grad():
        m.head.weight.fill_(2.0)
    algo.start_phase(m, "head")
    assert algo.threshold == 0.5
    algo.after_step(m, 1)                             # projected after every step
    assert m.head.weight.norm(dim=1).max() <= 0.5 + 1e-6
    z, y = torch.randn(4, 2), torch.tensor([0, 1, 1, 0])
    assert algo.loss(z, y, None, 1).item() == pytest.approx(F.cross_entropy(z, y, weight=algo.weight).item())
    assert algo.head_lr(0, 0.1) == algo.head_lr(5, 0.1) == 0.005


# ================================================================================ Group-DRO
class _RefLossComputer:
    """loss.py:LossComputer (is_robust=True, btl=False, normalize_loss=False) on the CPU:
    compute_group_avg + compute_robust_loss."""

    def __init__(self, n_groups, group_counts, step_size=0.01, adj=0.0):
        self.n_groups, self.step_size = n_groups, step_size
        self.group_counts = torch.tensor(group_counts, dtype=torch.float32)
        self.adj = torch.full((n_groups,), float(adj))
        self.adv_probs = torch.ones(n_groups) / n_groups

    def loss(self, yhat, y, group_idx):
        per_sample = F.cross_entropy(yhat, y, reduction="none")
        group_map = (group_idx == torch.arange(self.n_groups).unsqueeze(1).long()).float()
        group_count = group_map.sum(1)
        group_denom = group_count + (group_count == 0).float()
        group_loss = (group_map @ per_sample.view(-1)) / group_denom
        adjusted_loss = group_loss
        if torch.all(self.adj > 0):
            adjusted_loss += self.adj / torch.sqrt(self.group_counts)
        self.adv_probs = self.adv_probs * torch.exp(self.step_size * adjusted_loss.data)
        self.adv_probs = self.adv_probs / self.adv_probs.sum()
        return group_loss @ self.adv_probs


@pytest.mark.parametrize("adj", [0.0, 2.0])
def test_group_dro_updates_equal_loss_computer(adj):
    labels = np.array([0] * 30 + [0] * 3 + [1] * 4 + [1] * 20)
    groups = np.array([0] * 30 + [1] * 3 + [0] * 4 + [1] * 20)
    info = DataInfo(labels, groups, 2, 2, 5)
    cfg = AlgorithmConfig.model_validate({"name": "group_dro", "group_dro": {"eta": 0.3, "adjustment": adj}})
    algo = build_algorithm(cfg, info, torch.device("cpu"))
    ref = _RefLossComputer(4, np.bincount(labels * 2 + groups, minlength=4), step_size=0.3, adj=adj)
    torch.manual_seed(0)
    for b in range(5):
        y = torch.randint(0, 2, (6,))
        g = torch.randint(0, 2, (6,)) if b != 2 else torch.zeros(6, dtype=torch.long)  # batch 2: two groups absent
        z = torch.randn(6, 2)
        ids = algo.loss_group_ids(y, g)
        ours = algo.loss(z, y, F.one_hot(ids, 4).float(), 0)
        theirs = ref.loss(z, y, y * 2 + g)
        assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
        assert algo.q.numpy() == pytest.approx(ref.adv_probs.numpy(), rel=1e-5)


def test_group_dro_samples_groups_like_reweight_groups():
    from torch.utils.data import WeightedRandomSampler

    from synaug.train.data import epoch_order

    labels = np.array([0] * 40 + [0] * 2 + [1] * 3 + [1] * 15)
    groups = np.array([0] * 40 + [1] * 2 + [0] * 3 + [1] * 15)
    info = DataInfo(labels, groups, 2, 2, 5)
    algo = build_algorithm(AlgorithmConfig(name="group_dro"), info, torch.device("cpu"))
    assert algo.cfg.group_dro.reweight_groups and algo.cfg.group_dro.eta == 0.01
    # DRODataset.get_loader(train=True, reweight_groups=True)
    group_array = torch.LongTensor(labels * 2 + groups)
    group_counts = (torch.arange(4).unsqueeze(1) == group_array).sum(1).float()
    ref_weights = (len(group_array) / group_counts)[group_array]
    w = algo.sample_weights()
    assert torch.equal(w, ref_weights) and torch.equal(group_balanced_weights(labels * 2 + groups, 4), ref_weights)
    ref_order = list(WeightedRandomSampler(ref_weights, len(group_array), replacement=True,
                                           generator=torch.Generator().manual_seed(11)))
    ours = epoch_order(len(labels), torch.Generator().manual_seed(11), w)
    assert ours.tolist() == ref_order
    # every group is drawn about equally often over many epochs, unlike a plain shuffle
    draws = np.concatenate([epoch_order(len(labels), torch.Generator().manual_seed(s), w).numpy() for s in range(40)])
    share = np.bincount(group_array.numpy()[draws], minlength=4) / len(draws)
    assert np.abs(share - 0.25).max() < 0.03
    off_cfg = AlgorithmConfig.model_validate({"name": "group_dro", "group_dro": {"reweight_groups": False}})
    off = build_algorithm(off_cfg, info, torch.device("cpu"))
    assert off.sample_weights() is None


# ==================================================================== Waterbirds transforms
def _ref_get_transform_cub(target_resolution, train, augment_data, to_tensor="float"):
    """wb_data.py:get_transform_cub (Normalize left out where we compare uint8 tensors)."""
    from torchvision import transforms

    scale = 256.0 / 224.0
    last = [transforms.ToTensor(), transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
    if to_tensor == "uint8":
        last = [transforms.PILToTensor()]
    if (not train) or (not augment_data):
        return transforms.Compose([
            transforms.Resize((int(target_resolution[0] * scale), int(target_resolution[1] * scale))),
            transforms.CenterCrop(target_resolution), *last])
    return transforms.Compose([
        transforms.RandomResizedCrop(target_resolution, scale=(0.7, 1.0), ratio=(0.75, 1.3333333333333333),
                                     interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.RandomHorizontalFlip(), *last])


def test_waterbirds_eval_path_is_resize_then_centre_crop(tmp_path, write_image):
    from synaug.manifest import Manifest
    from synaug.train.config import DataConfig
    from synaug.train.data import ImageSet

    rows = []
    for i, size in enumerate([(60, 45), (37, 52), (40, 40)]):
        write_image(tmp_path / f"{i}.png", size=size, seed=i)
        rows.append({"path": f"{i}.png", "label": i % 2, "split": "test"})
    m = Manifest.from_records(rows, ["landbird", "waterbird"], {"real": tmp_path})
    res = 28                                          # a small "224": int(28 * 256 / 224) = 32
    data = DataConfig(image_size=res, eval_resize=32, num_workers=0)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    images = ImageSet(m, data, "evaluation", torch.device("cpu"), False, mean, std)
    assert images.mode == "stream"                    # auto picks the per-image path
    x = next(images.batches(torch.arange(3), 3, None, torch.Generator())).x
    from PIL import Image

    tf = _ref_get_transform_cub((res, res), train=False, augment_data=False)
    ref = torch.stack([tf(Image.open(tmp_path / f"{i}.png").convert("RGB")) for i in range(3)])
    assert x.shape == ref.shape and torch.allclose(x, ref, atol=1e-5)


def test_waterbirds_training_crop_equals_get_transform_cub(tmp_path, write_image):
    from PIL import Image

    from synaug.train.config import AugmentConfig
    from synaug.train.data import stream_transform

    img = Image.open(write_image(tmp_path / "a.png", size=(70, 50), seed=3)).convert("RGB")
    aug = AugmentConfig(random_resized_crop=True, rrc_scale=(0.7, 1.0), crop_padding=0, flip=True)
    ours_tf = stream_transform(28, aug)
    ref_tf = _ref_get_transform_cub((28, 28), train=True, augment_data=True, to_tensor="uint8")
    for seed in range(8):
        torch.manual_seed(seed)
        ref = ref_tf(img)
        torch.manual_seed(seed)
        assert torch.equal(ours_tf(img), ref), seed


def test_random_resized_crop_refuses_the_in_memory_path(tmp_path, write_image):
    from synaug.errors import SynaugError
    from synaug.manifest import Manifest
    from synaug.train.config import AugmentConfig, DataConfig
    from synaug.train.data import ImageSet

    write_image(tmp_path / "0.png", size=(16, 16))
    m = Manifest.from_records([{"path": "0.png", "label": 0, "split": "train"}], ["a"], {"real": tmp_path})
    images = ImageSet(m, DataConfig(mode="memory", image_size=16, cache_dir=str(tmp_path / "c")), "training",
                      torch.device("cpu"))
    with pytest.raises(SynaugError, match="streaming path"):
        next(images.batches(torch.arange(1), 1, AugmentConfig(random_resized_crop=True), torch.Generator()))
    with pytest.raises(ValueError, match="eval_resize"):
        DataConfig(mode="memory", image_size=16, eval_resize=20)


def test_waterbirds_paper_configs_use_the_dfr_transforms():
    from pathlib import Path

    from synaug.run import load_run_config

    root = Path(__file__).resolve().parents[1] / "configs"
    for name in ("table4-waterbirds-base.yaml", "table4-waterbirds-dfr.yaml", "table4-waterbirds-synaug.yaml"):
        t = load_run_config(root / name).train
        assert t.augment.random_resized_crop and tuple(t.augment.rrc_scale) == (0.7, 1.0), name
        assert t.augment.crop_padding == 0 and t.augment.flip
        assert (t.data.image_size, t.data.eval_resize) == (224, 256), name


# ================================================================ inter-class translation
def test_inter_class_guides_are_drawn_regardless_of_the_class(tmp_path):
    from synaug.generate import GenerateConfig
    from synaug.generate.base import plan_items
    from synaug.generate.diffusers_backend import Img2ImgGenerator
    from synaug.generate.runner import build_prompt_fn
    from synaug.generate.tiny import toy_image_manifest
    from synaug.plan import Cell, Plan

    classes = ["cat", "dog", "truck"]
    real = toy_image_manifest(tmp_path / "real", classes, 4, size=8)
    plan = Plan("class", classes, [Cell(0, "cat", 4, 90, attributes={"class": "cat"}),
                                   Cell(1, "dog", 4, 0, attributes={"class": "dog"}),
                                   Cell(2, "truck", 4, 0, attributes={"class": "truck"})])
    every = sorted(str(tmp_path / "real" / p) for p in real.df["path"])

    def guides(**img2img):
        cfg = GenerateConfig(model="tiny/none", backend="img2img", gen_size=8, img2img={"mode": "inter", **img2img})
        gen = Img2ImgGenerator(None, cfg, plan, real)
        items = plan_items(plan, build_prompt_fn(plan, cfg), cfg.seed)
        return gen, [gen.guide_of(it) for it in items]

    gen, got = guides()
    # the paper: "random samples in the dataset as guidance regardless of the class"
    assert list(gen._cands["cat"]) == every
    drawn = {p.split("/real/")[1].split("/")[0] for p in got}
    assert drawn == set(classes)                      # own class included
    own = sum(p.split("/real/")[1].startswith("cat/") for p in got) / len(got)
    assert 0.15 < own < 0.55                          # about 1/3 of 90 uniform draws
    gen, got = guides(exclude_own_class=True)         # the earlier behaviour, a named option
    assert not any(p.split("/real/")[1].startswith("cat/") for p in got)
    assert gen.name.startswith("img2img-inter-other")


def test_generate_help_says_how_inter_draws_its_guides():
    """``synaug generate --help`` describes the default inter-class draw (any class, own included)
    and the option that restricts it, not the earlier "random other class"."""
    import re

    from synaug.generate.cli import DESCRIPTION

    text = " ".join(DESCRIPTION.split())
    assert "random other class" not in text
    inter = re.search(r"inter \((.*?)\), img2img\.strength", text).group(1)
    assert "any class" in inter and "own included" in inter and "exclude_own_class: true" in inter
