"""UTKFace: labels parsed from ``age_gender_race_date.jpg`` file names.

Gender is the class (0 male, 1 female), race the group (0 White, 1 Black, 2 Asian,
3 Indian); race 4 "Others" is dropped as in the paper. ``age`` stays as an extra integer
column because prompts use it. UTKFace ships no split, so train/val/test is drawn here,
seeded, in one of two ways:

* ``split="balanced"`` (default), as the fairness literature draws it: the test set holds
  ``test_per_cell`` (100) images of every (gender, race) cell, as ``GenericDataset._make_data``
  in the code of Jung et al. 2022 (naver-ai/cgl_fairness, ``data_handler/dataset_factory.py``;
  also sangwon-jung94/FairDRO); validation is a ``val_frac`` share of every cell of the rest;
  training is the remainder, with its natural imbalance.
* ``split="stratified"``: ``test_frac`` and ``val_frac`` of every cell (natural imbalance in
  all three splits).

UTKFace (Zhang, Song & Qi, CVPR 2017) is for non-commercial research only.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np

from ..errors import SynaugError
from ..manifest import Manifest
from .adapters import IMG_EXT
from .registry import register_dataset

UTK_CLASSES = ["male", "female"]
UTK_GROUPS = ["White", "Black", "Asian", "Indian"]
OTHERS = 4
LICENCE = "UTKFace (Zhang, Song & Qi, CVPR 2017) is available for non-commercial research purposes only"
SPLITS = ("balanced", "stratified")
# age_gender_race_date then .jpg, or the aligned-and-cropped ``.jpg.chip.jpg``
_NAME = re.compile(r"^(\d{1,3})_([01])_([0-4])_(\d+)(\.[A-Za-z]+)(\.chip\.jpg)?$")


def parse_utkface_name(name: str) -> tuple[int, int, int] | None:
    """``(age, gender, race)`` from a UTKFace file name, or ``None`` if it does not parse."""
    m = _NAME.match(name)
    if m is None or m.group(5).lower() not in IMG_EXT:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def stratified_split(strata: np.ndarray, val_frac: float, test_frac: float, seed: int) -> np.ndarray:
    """Assign ``train``/``val``/``test`` per stratum: ``round(n*test_frac)`` test, then val.

    The draw depends only on ``seed`` and the order of ``strata``.
    """
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise SynaugError(f"split fractions must be in [0, 1) and sum below 1, got val={val_frac}, test={test_frac}")
    rng = np.random.RandomState(seed)
    out = np.full(len(strata), "train", dtype=object)
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_frac))
        n_val = int(round(len(idx) * val_frac))
        out[idx[:n_test]] = "test"
        out[idx[n_test:n_test + n_val]] = "val"
    return out


def last_per_cell(strata_in_order: np.ndarray, per_cell: int) -> np.ndarray:
    """Mask of the last ``per_cell`` rows of every stratum, in the given order.

    This is which rows ``GenericDataset._make_data`` of Jung et al.'s code puts in the test
    set: it walks the (shuffled) list backwards and moves the first ``min_cnt`` rows it meets
    of every (group, class) cell to the test set.
    """
    strata_in_order = np.asarray(strata_in_order)
    mask = np.zeros(len(strata_in_order), bool)
    for s in np.unique(strata_in_order):
        idx = np.flatnonzero(strata_in_order == s)
        mask[idx[len(idx) - min(per_cell, len(idx)):]] = True
    return mask


def balanced_split(strata: np.ndarray, test_per_cell: int, val_frac: float, seed: int,
                   names: list[str] | None = None) -> np.ndarray:
    """Test = ``test_per_cell`` rows of every stratum; val = ``val_frac`` of every stratum's rest.

    Rows are put in a seeded random order; the test rows of a stratum are its last
    ``test_per_cell`` rows in that order (:func:`last_per_cell`), the validation rows the first
    ``round(n_rest * val_frac)`` of the others. A stratum must keep at least one training row.
    ``names`` (optional) name the strata in errors.
    """
    if isinstance(test_per_cell, bool) or not isinstance(test_per_cell, (int, np.integer)) or test_per_cell < 1:
        raise SynaugError(f"test_per_cell must be a positive integer, got {test_per_cell!r}")
    if not 0 <= val_frac < 1:
        raise SynaugError(f"val_frac must be in [0, 1), got {val_frac}")
    strata = np.asarray(strata)
    values, counts = np.unique(strata, return_counts=True)
    small = [(v, n) for v, n in zip(values, counts) if n <= test_per_cell]
    if small:
        v, n = small[0]
        what = names[int(v)] if names is not None else f"stratum {v}"
        raise SynaugError(f"cell {what} has {n} images: a balanced test set of {test_per_cell} per cell "
                          "would leave none for training (lower test_per_cell or use split=stratified)")
    order = np.random.RandomState(seed).permutation(len(strata))
    out = np.full(len(strata), "train", dtype=object)
    test = last_per_cell(strata[order], test_per_cell)
    out[order[test]] = "test"
    rest = order[~test]
    for v in values:
        idx = rest[strata[rest] == v]
        n_val = int(round(len(idx) * val_frac))
        if n_val >= len(idx):
            raise SynaugError(f"val_frac={val_frac} leaves no training rows in a cell")
        out[idx[:n_val]] = "val"
    return out


def _scan(root: Path) -> tuple[list[dict], list[str], int]:
    """Rows of every parseable image under ``root`` (sorted by relative path), the malformed
    image names, and how many race-4 images were dropped. ``os.walk``: no stat per file."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root).as_posix()
        files += [(f if rel == "." else f"{rel}/{f}", f) for f in filenames if not f.startswith(".")]
    rows, malformed, others = [], [], 0
    for relpath, name in sorted(files):
        parsed = parse_utkface_name(name)
        if parsed is None:
            if os.path.splitext(name)[1].lower() in IMG_EXT:
                malformed.append(name)
            continue
        age, gender, race = parsed
        if race == OTHERS:
            others += 1
            continue
        rows.append({"path": relpath, "label": gender, "group": race, "age": age})
    return rows, malformed, others


@register_dataset("utkface")
def utkface(root: str | Path | None, split: str = "balanced", test_per_cell: int | None = None,
            val_frac: float = 0.1, test_frac: float | None = None, seed: int = 0,
            quiet: bool = False) -> Manifest:
    """Manifest of the UTKFace images under ``root`` (searched recursively).

    Parameters
    ----------
    split : {"balanced", "stratified"}
        ``balanced``: ``test_per_cell`` test images in every (gender, race) cell (Jung et al.
        2022), ``val_frac`` of every cell of the rest for validation, the remainder (natural
        imbalance) for training. ``stratified``: ``test_frac`` / ``val_frac`` of every cell.
    test_per_cell : int, optional
        Balanced split only; default 100, as ``min_cnt`` in Jung et al.'s ``_make_data``.
    val_frac : float
        Share of every cell (after the test draw) put into validation.
    test_frac : float, optional
        Stratified split only; default 0.2.
    seed : int
        Seed of the split.
    quiet : bool
        Do not print how many files were skipped.
    """
    if split not in SPLITS:
        raise SynaugError(f"utkface split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "balanced" and test_frac is not None:
        raise SynaugError("utkface: test_frac is an option of split=stratified (the balanced split takes test_per_cell)")
    if split == "stratified" and test_per_cell is not None:
        raise SynaugError("utkface: test_per_cell is an option of split=balanced (the stratified split takes test_frac)")
    if root is None:
        raise SynaugError("utkface needs --data-root (the folder with the UTKFace images)")
    root = Path(root)
    if not root.is_dir():
        raise SynaugError(f"UTKFace folder not found: {root}")
    rows, malformed, others = _scan(root)
    if not rows:
        raise SynaugError(f"no UTKFace images (age_gender_race_date.jpg) under {root}"
                          + (f"; {len(malformed)} image names did not parse, e.g. {malformed[0]!r}" if malformed else ""))
    if (malformed or others) and not quiet:
        msg = f"utkface: using {len(rows)} images; dropped {others} with race 4 (others)"
        if malformed:
            msg += f"; skipped {len(malformed)} malformed names (e.g. {malformed[0]!r})"
        print(f"synaug: {msg}", file=sys.stderr)
    G = len(UTK_GROUPS)
    strata = np.array([r["label"] * G + r["group"] for r in rows])
    if split == "balanced":
        cell_names = [f"{c}/{g}" for c in UTK_CLASSES for g in UTK_GROUPS]
        splits = balanced_split(strata, 100 if test_per_cell is None else test_per_cell, val_frac, seed, cell_names)
    else:
        splits = stratified_split(strata, val_frac, 0.2 if test_frac is None else test_frac, seed)
    for r, s in zip(rows, splits):
        r["split"] = s
    return Manifest.from_records(rows, UTK_CLASSES, {"real": root}, UTK_GROUPS)
