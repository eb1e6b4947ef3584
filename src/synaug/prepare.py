"""Build the real data of a run: load, cap per class, carve a test split, long-tail, carve
validation, held-out pool.

The data is a registered dataset (``dataset: NAME`` with ``root``; ``imagefolder`` reads
``root/<class>/`` or ``root/{train,val,test}/<class>/``) or your own ``manifest`` (a CSV /
Parquet file, see :meth:`synaug.manifest.Manifest._from_plain`, or an image folder).
Data without test rows needs ``test_fraction``: a seeded, stratified share of each class's
training images becomes the test split before anything else is drawn.
Validation is always carved from *training* images (never from test). When the training set
is long-tailed from a balanced one, the images the long-tail draw did not keep form a real,
disjoint pool: validation comes from it first, and the rest can feed the pool generator.

Without a long tail, ``heldout_fraction`` holds out a share of every class x group cell of the
training rows as that pool (it keeps the training set's natural imbalance), and
``train_fraction`` then keeps a share of every cell of what is left for training (a smaller
training set with the same imbalance). The pool is what ``generate: {backend: pool, pool:
{manifest: heldout}}`` draws from, matching class and group names; it never overlaps the
training, validation or test rows.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np
from pydantic import Field, model_validator

from .config import Strict
from .data import load_dataset, make_long_tail
from .data.files import check_manifest_images, size_counts
from .errors import SynaugError
from .data.read import read_manifest
from .manifest import Manifest


class DataConfig(Strict):
    """Where the real images come from. Relative paths in a config file are resolved against
    the config file's folder (``synaug run``)."""

    PATH_KEYS: ClassVar[tuple[str, ...]] = ("root", "manifest")
    MAYBE_PATH_MAPS: ClassVar[tuple[str, ...]] = ("options",)

    dataset: str | None = "shared-cifar10"   # a registered adapter (imagefolder, table, shared-cifar10, ...)
    root: str | None = None                  # the dataset's folder / root of a plain table's paths
    options: dict = {}           # extra adapter options, e.g. {names: FILE} (imagenet100-lt)
    manifest: str | None = None  # your own CSV / Parquet manifest (or an image folder); replaces `dataset`
    img_max: Optional[int] = Field(None, ge=1)
    train_per_class: Optional[int] = Field(None, ge=1)
    imbalance_factor: Optional[float] = Field(None, ge=1)
    lt_seed: int = 0
    val_per_class: int = Field(0, ge=0)
    test_per_class: Optional[int] = Field(None, ge=1)
    test_fraction: Optional[float] = Field(None, gt=0, lt=1)  # carve a test split when the data has none
    split_seed: int = 0
    # a real pool held out from the training rows, per class x group cell (natural imbalance kept)
    heldout_fraction: float | None = Field(None, gt=0, lt=1)
    train_fraction: float | None = Field(None, gt=0, le=1)   # then keep this share of every cell for training

    @model_validator(mode="before")
    @classmethod
    def _manifest_replaces_default_dataset(cls, data):
        # `data: {manifest: my.csv}` means "my data", not "my data and the default dataset"
        if isinstance(data, dict) and data.get("manifest") and "dataset" not in data:
            data = {**data, "dataset": None}
        return data


@dataclass
class PreparedData:
    real: Manifest         # train (possibly long-tailed) + val + test, all real
    pool: Manifest | None  # held-out real train images, disjoint from train and val
    image_sizes: Counter = field(default_factory=Counter)  # (width, height) -> rows of `real`


def _cap(m: Manifest, split: str, n: int | None, seed: int) -> Manifest:
    """Keep ``n`` rows of each class in ``split`` (a seeded pick); other splits untouched."""
    if n is None:
        return m
    keep = _per_class_pick(m, split, np.full(m.num_classes, n), seed, keep_one=False)
    return m.select(keep | (m.df["split"] != split).to_numpy())


def prepare(cfg: DataConfig, loaded: Manifest | None = None) -> PreparedData:
    """The real data of a run (see the module docstring); at the end every image file of its
    train / val / test rows is checked (exists, decodes, its size; all problems in one message,
    rows named by their line in your CSV). ``loaded``: :func:`load_data` already read."""
    m = loaded if loaded is not None else load_data(cfg)
    loaded_rows = {(s, p): i for i, (s, p) in enumerate(zip(m.df["source"], m.df["path"]))}
    m = _cap(m, "train", cfg.train_per_class, cfg.split_seed)
    if cfg.test_fraction is not None and not (m.df["split"] == "test").any():
        m = _carve_test(m, cfg.test_fraction, cfg.split_seed + 6)
    if not (m.df["split"] == "test").any():
        raise SynaugError("data has no test rows to evaluate on: set data.test_fraction (e.g. 0.2) to hold "
                          "out a share of each class, or give a split column / a root/test/<class>/ folder")
    m = _cap(m, "test", cfg.test_per_class, cfg.split_seed + 1)
    pool = None
    if cfg.imbalance_factor is not None:
        if cfg.heldout_fraction is not None or cfg.train_fraction is not None:
            raise SynaugError("data: heldout_fraction / train_fraction cannot be combined with imbalance_factor "
                              "(the long-tail draw already holds out the images it leaves out)")
        m, pool = make_long_tail(m, cfg.imbalance_factor, seed=cfg.lt_seed, img_max=cfg.img_max)
    if cfg.heldout_fraction is not None:
        held = _per_cell_share(m, "train", cfg.heldout_fraction, cfg.split_seed + 4)
        pool, m = m.select(held), m.select(~held)
    if cfg.train_fraction is not None:
        keep = _per_cell_share(m, "train", cfg.train_fraction, cfg.split_seed + 5)
        m = m.select(keep | (m.df["split"] != "train").to_numpy())
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
    table = cfg.manifest if cfg.manifest and Path(cfg.manifest).is_file() else None
    sizes = check_manifest_images(m, _what(cfg), table, [loaded_rows[k] for k in zip(m.df["source"], m.df["path"])])
    return PreparedData(m, pool, size_counts(sizes, m))


def _what(cfg: DataConfig) -> str:
    if cfg.manifest:
        return f"images of data.manifest {Path(cfg.manifest).name}"
    return f"images of data.dataset {cfg.dataset}"


def data_key(cfg: DataConfig) -> tuple[str, Manifest | None]:
    """The cache key of a run's data stage, and the data as loaded when the key needed it.

    Besides the config, your own data (a manifest file, an image folder) adds
    :func:`source_digest`, so an edited CSV or a replaced image re-runs the data stage and
    every stage after it. The registered datasets (sha256-checked archives) keep a key of the
    config alone.
    """
    from .config import dump
    from .stages import fingerprint

    if not (cfg.manifest or cfg.dataset in ("imagefolder", "table")):
        return fingerprint("data", dump(cfg)), None
    m = load_data(cfg)
    return fingerprint("data", dump(cfg), source_digest(m)), m


def source_digest(m: Manifest) -> str:
    """A digest of the rows of ``m`` and of every image file's size and modification time."""
    import hashlib
    import os

    h = hashlib.sha256(json.dumps([m.classes, m.groups]).encode())
    df = m.df
    cols = df["path"] + "\t" + df["label"].astype(str) + "\t" + df["group"].astype(str) + "\t" + df["split"]
    for line, p in zip(cols, m.abspaths()):
        try:
            st = os.stat(p)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"  # the file check of the data stage names it
        h.update(f"{line}\t{stamp}\n".encode())
    return h.hexdigest()[:16]


def load_data(cfg: DataConfig) -> Manifest:
    """The data's manifest as found on disk (no caps, splits or long tail yet)."""
    if bool(cfg.manifest) == bool(cfg.dataset):
        raise SynaugError("data: give exactly one of 'dataset' or 'manifest'")
    try:
        if cfg.manifest:
            m = read_manifest(cfg.manifest, root=cfg.root)
        else:
            m = load_dataset(cfg.dataset, cfg.root, **cfg.options)
    except SynaugError as e:  # adapters speak of the CLI flag; in a run config it is data.root
        raise SynaugError(str(e).replace("--data-root", "data.root")) from None
    if (m.df["source"] != "real").any():
        raise SynaugError("data: the input manifest must hold real images only")
    return m


def _carve_test(m: Manifest, fraction: float, seed: int) -> Manifest:
    """Move ``round(fraction * n)`` of the train rows of every class (class x group cell when
    there are groups) to the test split; seeded, and every cell keeps one training image."""
    df = m.df.copy()
    train = (df["split"] == "train").to_numpy()
    cell = df["label"].to_numpy() * (m.num_groups + 1) + df["group"].to_numpy() + 1
    rng = np.random.RandomState(seed)
    for k in np.unique(cell[train]):
        idx = np.flatnonzero(train & (cell == k))
        take = min(int(np.rint(fraction * len(idx))), len(idx) - 1)
        rng.shuffle(idx)
        df.loc[idx[:max(take, 0)], "split"] = "test"
    return Manifest(df, m.classes, m.roots, m.groups)


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


def _per_cell_share(m: Manifest, split: str, frac: float, seed: int) -> np.ndarray:
    """Seeded pick of ``round(n * frac)`` rows of every class x group cell (class when a row has
    no group) of ``split``: the pick has the same class x group proportions as the split."""
    rng = np.random.RandomState(seed)
    df = m.df
    G = m.num_groups + 1
    cell = df["label"].to_numpy() * G + (df["group"].to_numpy() + 1)
    in_split = (df["split"] == split).to_numpy()
    mask = np.zeros(len(m), bool)
    for c in np.unique(cell[in_split]):
        idx = np.flatnonzero(in_split & (cell == c))
        rng.shuffle(idx)
        mask[idx[:int(round(len(idx) * frac))]] = True
    return mask
