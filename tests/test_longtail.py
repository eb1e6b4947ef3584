"""Long-tailed CIFAR exactly as LDAM-DRW builds it, for any manifest."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synaug.data import long_tail_counts, make_long_tail
from synaug.errors import SynaugError
from synaug.manifest import Manifest

EXPECTED_TOTALS = {  # community numbers (issue 2)
    ("cifar100", 100): 10847, ("cifar100", 50): 12608, ("cifar100", 10): 19573,
    ("cifar10", 100): 12406, ("cifar10", 50): 13996, ("cifar10", 10): 20431,
}
SIZES = {"cifar10": (10, 5000, 1000), "cifar100": (100, 500, 100)}


def cifar_rows(num_classes: int, per_class: int, per_class_test: int, interleave_seed: int | None = 7):
    """Rows of a balanced CIFAR-shaped manifest (no files); train labels interleaved as in the
    real batches, so 'the i-th image of class c' is not simply row c*n+i."""
    labels = np.repeat(np.arange(num_classes), per_class)
    if interleave_seed is not None:
        labels = np.random.RandomState(interleave_seed).permutation(labels)
    test = np.repeat(np.arange(num_classes), per_class_test)
    df = pd.DataFrame({"path": [f"train/{i:06d}.png" for i in range(len(labels))]
                       + [f"test/{i:06d}.png" for i in range(len(test))],
                       "label": np.concatenate([labels, test]),
                       "split": ["train"] * len(labels) + ["test"] * len(test)})
    return Manifest(df, [f"c{i}" for i in range(num_classes)], {"real": "/data"})


@pytest.fixture(scope="module")
def cifar():
    return {name: cifar_rows(*size) for name, size in SIZES.items()}


def ldam_reference(targets: np.ndarray, num_classes: int, imbalance_factor: float, seed: int) -> np.ndarray:
    """Index selection of LDAM-DRW's IMBALANCECIFAR (get_img_num_per_cls + gen_imbalanced_data)."""
    img_max = len(targets) / num_classes
    imb_factor = 1.0 / imbalance_factor
    img_num_per_cls = [int(img_max * (imb_factor ** (i / (num_classes - 1.0)))) for i in range(num_classes)]
    np.random.seed(seed)
    selected = []
    for the_class, the_img_num in zip(np.unique(targets), img_num_per_cls):
        idx = np.where(targets == the_class)[0]
        np.random.shuffle(idx)
        selected.append(idx[:the_img_num])
    return np.concatenate(selected)


@pytest.mark.parametrize("name,imb", sorted(EXPECTED_TOTALS))
def test_long_tail_counts_match_the_community_totals(name, imb):
    C, img_max, _ = SIZES[name]
    counts = long_tail_counts(num_classes=C, img_max=img_max, imbalance_factor=imb)
    assert sum(counts) == EXPECTED_TOTALS[(name, imb)]
    assert counts[0] == img_max and counts[-1] == int(img_max / imb)
    assert all(a >= b for a, b in zip(counts, counts[1:]))  # head first, non-increasing


def test_long_tail_counts_cifar10_if100_profile():
    assert long_tail_counts(10, 5000, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_long_tail_counts_edge_cases():
    assert long_tail_counts(5, 40, 1) == [40] * 5
    assert long_tail_counts(1, 7, 100) == [7]
    with pytest.raises(SynaugError):
        long_tail_counts(10, 500, 0.5)
    with pytest.raises(SynaugError):
        long_tail_counts(0, 500, 10)


@pytest.mark.parametrize("name,imb", sorted(EXPECTED_TOTALS))
def test_make_long_tail_on_cifar_shaped_manifests(cifar, name, imb):
    m = cifar[name]
    C, img_max, n_test = SIZES[name]
    lt, held = make_long_tail(m, imb, seed=0)
    counts = lt.class_counts("train")
    assert counts.sum() == EXPECTED_TOTALS[(name, imb)]
    assert counts.tolist() == long_tail_counts(C, img_max, imb)
    assert counts[0] == img_max and counts.argmax() == 0  # class 0 is the head
    assert lt.class_counts("test").tolist() == [n_test] * C  # test untouched
    # held-out: disjoint from the long tail and together they are the balanced train split
    lt_train = set(lt.split("train").df["path"])
    held_paths = set(held.df["path"])
    assert not lt_train & held_paths
    assert lt_train | held_paths == set(m.split("train").df["path"])
    assert held.class_counts("train").tolist() == (img_max - counts).tolist()
    assert set(held.df["split"]) <= {"train"}


@pytest.mark.parametrize("seed", [0, 3])
def test_selection_is_exactly_ldam_drw(cifar, seed):
    m = cifar["cifar10"]
    train = m.split("train")
    lt, _ = make_long_tail(m, 100, seed=seed)
    ref = ldam_reference(train.df["label"].to_numpy(), 10, 100, seed)
    assert set(lt.split("train").df["path"]) == set(train.df["path"].to_numpy()[ref])


def test_seed_determines_the_selection(cifar):
    m = cifar["cifar100"]
    a, _ = make_long_tail(m, 50, seed=1)
    b, _ = make_long_tail(m, 50, seed=1)
    c, _ = make_long_tail(m, 50, seed=2)
    assert a.df["path"].tolist() == b.df["path"].tolist()
    assert set(a.df["path"]) != set(c.df["path"])
    assert a.class_counts().tolist() == c.class_counts().tolist()


def test_within_class_shuffle_not_first_rows(cifar):
    m = cifar["cifar10"]
    lt, _ = make_long_tail(m, 100, seed=0)
    train = m.split("train").df
    for c in range(1, 10):  # class 0 keeps everything
        rows = train[train["label"] == c]["path"].tolist()
        kept = set(lt.split("train").df.query("label == @c")["path"])
        assert kept != set(rows[: len(kept)])


def test_any_manifest_with_img_max_and_other_split(make_manifest):
    m = make_manifest([30, 30, 30, 30], extra_splits={"val": [2, 2, 2, 2]})
    lt, held = make_long_tail(m, 10, seed=0)
    assert lt.class_counts("train").tolist() == long_tail_counts(4, 30, 10) == [30, 13, 6, 3]
    assert lt.class_counts("val").tolist() == [2, 2, 2, 2]
    lt2, _ = make_long_tail(m, 10, seed=0, img_max=20)
    assert lt2.class_counts("train").tolist() == [20, 9, 4, 2]  # 20 * 10^(-1/3) = 9.28
    lt3, _ = make_long_tail(m, 10, seed=0, split="val")  # long-tail another split
    assert lt3.class_counts("val").tolist() == [2, 0, 0, 0] and lt3.class_counts("train").sum() == 120


def test_too_few_images_is_a_one_line_error(make_manifest):
    m = make_manifest([10, 3, 10])
    with pytest.raises(SynaugError) as e:
        make_long_tail(m, 2, seed=0)
    assert "class 'c1' has 3 train images, the long tail needs 7" == str(e.value)


def test_python_interface_prints_head_first(capsys):
    print(long_tail_counts(num_classes=100, img_max=500, imbalance_factor=100))
    out = capsys.readouterr().out.strip()
    values = [int(x) for x in out.strip("[]").split(",")]
    assert len(values) == 100 and values[0] == 500 and values[-1] == 5 and sum(values) == 10847
