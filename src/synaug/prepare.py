"""Build the real data of a run: load, cap per class, long-tail, carve validation, held-out pool.

Validation is always carved from *training* images (never from test). When the training set
is long-tailed from a balanced one, the images the long-tail draw did not keep form a real,
disjoint pool: validation comes from it first, and the rest can feed the pool generator.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import Strict
from .data import load_dataset, make_long_tail
from .errors import SynaugError
from .manifest import Manifest


class DataConfig(Strict):
    dataset: str | None = "shared-cifar10"
    root: str | None = None
    options: dict = {}           # extra adapter options, e.g. {names: FILE} (imagenet100-lt)
    manifest: str | None = None
    img_max: int | None = None
    train_per_class: int | None = None
    imbalance_factor: float | None = None
    lt_seed: int = 0
    val_per_class: int = 0
    test_per_class: int | None = None
    split_seed: int = 0


@dataclass
class PreparedData:
    real: Manifest         # train (possibly long-tailed) + val + test, all real
    pool: Manifest | None  # held-out real train images, disjoint from train and val


def _cap(m: Manifest, split: str, n: int | None, seed: int) -> Manifest:
    """Keep ``n`` rows of each class in ``split`` (a seeded pick); other splits untouched."""
    if n is None:
        return m
    keep = _per_class_pick(m, split, np.full(m.num_classes, n), seed, keep_one=False)
    return m.select(keep | (m.df["split"] != split).to_numpy())


def prepare(cfg: DataConfig) -> PreparedData:
    if bool(cfg.manifest) == bool(cfg.dataset):
        raise SynaugError("data: give exactly one of 'dataset' or 'manifest'")
    if cfg.manifest:
        m = Manifest.read(cfg.manifest, root=cfg.root)
    else:
        m = load_dataset(cfg.dataset, cfg.root, **cfg.options)
    if (m.df["source"] != "real").any():
        raise SynaugError("data: the input manifest must hold real images only")
    m = _cap(m, "train", cfg.train_per_class, cfg.split_seed)
    m = _cap(m, "test", cfg.test_per_class, cfg.split_seed + 1)
    pool = None
    if cfg.imbalance_factor is not None:
        m, pool = make_long_tail(m, cfg.imbalance_factor, seed=cfg.lt_seed, img_max=cfg.img_max)
    if cfg.val_per_class > 0 and not (m.df["split"] == "val").any():
        parts = []
        need = np.full(m.num_classes, cfg.val_per_class)
        if pool is not None:
            pool_mask = _per_class_pick(pool, "train", need, cfg.split_seed + 2, keep_one=False)
            parts.append(pool.select(pool_mask))
            pool = pool.select(~pool_mask)
            need = need - parts[0].class_counts("train")
        # classes the pool cannot serve (e.g. the head of a long tail drawn with img_max = all)
        train_mask = _per_class_pick(m, "train", need, cfg.split_seed + 3, keep_one=True)
        parts.append(m.select(train_mask))
        m = m.select(~train_mask)
        val = Manifest.concat(parts)
        val.df["split"] = "val"
        m = Manifest.concat([m, val])
    if (m.df["split"] == "train").sum() == 0:
        raise SynaugError("data: no training rows")
    return PreparedData(m, pool)


def _per_class_pick(m: Manifest, split: str, n, seed: int, keep_one: bool) -> np.ndarray:
    """Seeded pick of ``n[c]`` rows of class ``c`` in ``split``; ``keep_one`` never empties a class."""
    rng = np.random.RandomState(seed)
    mask = np.zeros(len(m), bool)
    df = m.df
    for c in range(m.num_classes):
        want = int(n[c])
        if want <= 0:
            continue
        idx = np.flatnonzero((df["split"] == split).to_numpy() & (df["label"] == c).to_numpy())
        take = min(want, len(idx) - 1 if keep_one else len(idx))
        rng.shuffle(idx)
        mask[idx[:max(take, 0)]] = True
    return mask
