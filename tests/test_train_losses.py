"""Losses, class weights and algorithm plug-ins against their formulas / reference code."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synaug.train.algorithms import DataInfo, build_algorithm, list_algorithms, max_norm_, maxnorm_threshold
from synaug.train.config import AlgorithmConfig
from synaug.train.losses import (balanced_softmax_loss, class_balanced_weights, inverse_frequency_weights,
                                 ldam_loss, ldam_margins, log_prior)

COUNTS = np.array([500, 120, 30, 5])


def test_balanced_softmax_matches_its_formula():
    torch.manual_seed(0)
    z = torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 3, 3, 1])
    got = balanced_softmax_loss(z, y, COUNTS)
    n = torch.tensor(COUNTS, dtype=torch.float32)
    # -log( n_y e^{z_y} / sum_j n_j e^{z_j} )
    num = n[y] * torch.exp(z[torch.arange(6), y])
    den = (n[None] * torch.exp(z)).sum(1)
    assert got.item() == pytest.approx((-torch.log(num / den)).mean().item(), rel=1e-5)
    # it differs from plain CE unless the prior is uniform
    assert not math.isclose(got.item(), F.cross_entropy(z, y).item(), rel_tol=1e-3)
    assert balanced_softmax_loss(z, y, [7, 7, 7, 7]).item() == pytest.approx(F.cross_entropy(z, y).item(), rel=1e-6)


def test_balanced_softmax_soft_targets_equal_hard_for_one_hot():
    z = torch.randn(5, 4)
    y = torch.tensor([0, 1, 2, 3, 0])
    assert balanced_softmax_loss(z, F.one_hot(y, 4).float(), COUNTS).item() == pytest.approx(
        balanced_softmax_loss(z, y, COUNTS).item(), rel=1e-6)


def test_log_prior_keeps_empty_classes_finite():
    assert torch.isfinite(log_prior([10, 0, 5])).all()


def test_ldam_margins_formula():
    m = ldam_margins(COUNTS, max_m=0.5).numpy()
    ref = 1.0 / COUNTS ** 0.25
    ref = ref * 0.5 / ref.max()
    assert m == pytest.approx(ref, rel=1e-6)
    assert m.max() == pytest.approx(0.5)
    # m_c * n_c^(1/4) is one constant C
    assert np.ptp(m * COUNTS ** 0.25) < 1e-6


def _ldam_reference(x, target, m_list, s, weight=None):
    # LDAM-DRW's LDAMLoss.forward (Cao et al., 2019), transcribed
    index = torch.zeros_like(x, dtype=torch.uint8)
    index.scatter_(1, target.data.view(-1, 1), 1)
    index_float = index.type(torch.float32)
    batch_m = torch.matmul(m_list[None, :], index_float.transpose(0, 1)).view((-1, 1))
    output = torch.where(index.bool(), x - batch_m, x)
    return F.cross_entropy(s * output, target, weight=weight)


def test_ldam_loss_matches_reference_code():
    torch.manual_seed(1)
    x = torch.rand(8, 4) * 2 - 1  # cosine logits
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    m = ldam_margins(COUNTS)
    w = class_balanced_weights(COUNTS, 0.9999)
    assert ldam_loss(x, y, m, 30.0).item() == pytest.approx(_ldam_reference(x, y, m, 30.0).item(), rel=1e-5)
    assert ldam_loss(x, y, m, 30.0, w).item() == pytest.approx(_ldam_reference(x, y, m, 30.0, w).item(), rel=1e-5)
    # one-hot soft targets reduce to the hard case (unweighted)
    assert ldam_loss(x, F.one_hot(y, 4).float(), m, 30.0).item() == pytest.approx(ldam_loss(x, y, m, 30.0).item(), rel=1e-5)


def test_class_balanced_weights_formula():
    beta = 0.999
    w = class_balanced_weights(COUNTS, beta).numpy()
    ref = (1 - beta) / (1 - beta ** COUNTS.astype(float))
    ref = ref / ref.sum() * len(COUNTS)
    assert w == pytest.approx(ref, rel=1e-6)
    assert w.sum() == pytest.approx(4.0, rel=1e-6)
    assert (np.diff(w) > 0).all()  # rarer class, larger weight
    assert class_balanced_weights(COUNTS, 0.0).numpy() == pytest.approx([1, 1, 1, 1])


def test_inverse_frequency_weights():
    w = inverse_frequency_weights([100, 50, 0, 25]).numpy()
    ref = np.array([1 / 100, 1 / 50, 1 / 25])
    ref = ref / ref.sum() * 3
    assert w[[0, 1, 3]] == pytest.approx(ref, rel=1e-6) and w[2] == 0


# ---------------------------------------------------------------- plug-ins
def _info(labels, groups=None, G=0, epochs=10):
    labels = np.asarray(labels)
    groups = np.asarray(groups) if groups is not None else -np.ones_like(labels)
    return DataInfo(labels, groups, int(labels.max()) + 1, G, epochs)


def test_registry_has_every_baseline():
    assert set(list_algorithms()) >= {"ce", "resample", "reweight", "balanced_softmax", "ldam_drw",
                                      "group_dro", "weight_balancing"}


def test_resampling_balances_classes_in_expectation():
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    algo = build_algorithm(AlgorithmConfig(name="resample"), _info(labels), torch.device("cpu"))
    w = algo.sample_weights()
    per_class = [float(w[labels == c].sum()) for c in range(3)]
    assert per_class == pytest.approx([1.0, 1.0, 1.0])
    draws = torch.multinomial(w, 30000, replacement=True, generator=torch.Generator().manual_seed(0))
    frac = np.bincount(labels[draws.numpy()], minlength=3) / 30000
    assert frac == pytest.approx([1 / 3] * 3, abs=0.02)
    assert build_algorithm(AlgorithmConfig(name="ce"), _info(labels), torch.device("cpu")).sample_weights() is None


def test_reweight_uses_training_counts():
    labels = np.array([0] * 30 + [1] * 10)
    algo = build_algorithm(AlgorithmConfig.model_validate({"name": "reweight", "reweight": {"kind": "inverse"}}),
                           _info(labels), torch.device("cpu"))
    assert algo.weight.numpy() == pytest.approx([0.5, 1.5])
    z, y = torch.randn(4, 2), torch.tensor([0, 1, 1, 0])
    assert algo.loss(z, y, None, 0).item() == pytest.approx(F.cross_entropy(z, y, weight=algo.weight).item())


def test_ldam_drw_switches_weights_at_configured_epoch():
    labels = np.array([0] * 50 + [1] * 5)
    cfg = AlgorithmConfig.model_validate({"name": "ldam_drw", "ldam": {"drw_epoch": 3}})
    algo = build_algorithm(cfg, _info(labels), torch.device("cpu"))
    assert algo.weight_at(2) is None
    assert algo.weight_at(3) is not None and algo.weight_at(3)[1] > algo.weight_at(3)[0]
    x, y = torch.rand(6, 2), torch.tensor([0, 1, 0, 1, 1, 1])
    assert algo.loss(x, y, None, 2).item() != pytest.approx(algo.loss(x, y, None, 3).item())


def test_group_dro_upweights_the_worst_group():
    labels = np.array([0, 0, 1, 1])
    groups = np.array([0, 1, 0, 1])
    cfg = AlgorithmConfig.model_validate({"name": "group_dro", "group_dro": {"eta": 0.5}})
    algo = build_algorithm(cfg, _info(labels, groups, G=2), torch.device("cpu"))
    assert algo.num_loss_groups == 4
    y = torch.tensor([0, 0, 1, 1])
    g = torch.tensor([0, 1, 0, 1])
    ids = algo.loss_group_ids(y, g)
    assert ids.tolist() == [0, 1, 2, 3]
    logits = torch.tensor([[3.0, 0.0], [0.0, 3.0], [0.0, 3.0], [0.0, 3.0]])  # cell (0, 1) is wrong
    per = F.cross_entropy(logits, y, reduction="none")
    loss = algo.loss(logits, y, F.one_hot(ids, 4).float(), 0)
    q = torch.exp(0.5 * per) / torch.exp(0.5 * per).sum()  # from uniform q
    assert algo.q.numpy() == pytest.approx(q.numpy(), rel=1e-5)
    assert loss.item() == pytest.approx((q * per).sum().item(), rel=1e-5)
    assert int(algo.q.argmax()) == 1
    state = algo.state_dict()
    fresh = build_algorithm(cfg, _info(labels, groups, G=2), torch.device("cpu"))
    fresh.load_state_dict(state)
    assert torch.equal(fresh.q, algo.q)


def test_max_norm_projects_rows():
    w = torch.tensor([[3.0, 4.0], [0.03, 0.04]])
    max_norm_(w, 1.0)
    assert w.norm(dim=1).numpy() == pytest.approx([1.0, 0.05], rel=1e-5)


def test_weight_balancing_stage2_is_head_only_with_a_relative_max_norm():
    # the relative threshold of LTR-weight-balancing (tests/test_reference_baselines.py compares
    # it with MaxNorm_via_PGD); the absolute radius is the named option max_norm: absolute
    labels = np.array([0] * 40 + [1] * 4 + [2] * 10)
    cfg = AlgorithmConfig.model_validate({"name": "weight_balancing", "weight_balancing": {"stage2_epochs": 2}})
    algo = build_algorithm(cfg, _info(labels, epochs=5), torch.device("cpu"))
    assert algo.extra_epochs() == 2
    z, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    assert algo.loss(z, y, None, 4).item() == pytest.approx(F.cross_entropy(z, y).item())
    assert algo.loss(z, y, None, 5).item() != pytest.approx(F.cross_entropy(z, y).item())

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(3, 3)

    m = M()
    with torch.no_grad():
        m.head.weight.copy_(torch.tensor([[3.0, 0, 0], [0, 1.0, 0], [0, 0, 2.0]]))
    algo.start_phase(m, "head")
    assert algo.threshold == pytest.approx(1.0 + 0.1 * (3.0 - 1.0))
    algo.after_epoch(m, 4)
    assert m.head.weight.detach().norm(dim=1).max().item() == pytest.approx(3.0)  # stage 1: untouched
    algo.after_epoch(m, 5)
    assert m.head.weight.detach().norm(dim=1).tolist() == pytest.approx([1.2, 1.0, 1.2])
    assert maxnorm_threshold(torch.tensor([0.5, 2.5]), ratio=0.5) == pytest.approx(1.5)
    absolute = build_algorithm(AlgorithmConfig.model_validate(
        {"name": "weight_balancing", "weight_balancing": {"max_norm": "absolute", "max_norm_radius": 0.5}}),
        _info(labels, epochs=5), torch.device("cpu"))
    absolute.start_phase(m, "head")
    absolute.after_epoch(m, 5)
    assert m.head.weight.norm(dim=1).max() <= 0.5 + 1e-6
