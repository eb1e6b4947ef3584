"""UTKFace: labels parsed from ``age_gender_race_date.jpg`` file names.

Gender is the class (0 male, 1 female), race the group (0 White, 1 Black, 2 Asian,
3 Indian); race 4 "Others" is dropped as in the paper. ``age`` stays as an extra integer
column because prompts use it. UTKFace ships no split, so train/val/test is drawn here:
seeded and stratified per (gender, race) cell.
"""
from __future__ import annotations

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


@register_dataset("utkface")
def utkface(root: str | Path | None, val_frac: float = 0.1, test_frac: float = 0.2, seed: int = 0,
            quiet: bool = False) -> Manifest:
    """Manifest of the UTKFace images under ``root`` (searched recursively).

    Parameters
    ----------
    val_frac, test_frac : float
        Fractions of every (gender, race) cell put into val / test; the rest is train.
    seed : int
        Seed of the split.
    quiet : bool
        Do not print how many files were skipped.
    """
    if root is None:
        raise SynaugError("utkface needs --data-root (the folder with the UTKFace images)")
    root = Path(root)
    if not root.is_dir():
        raise SynaugError(f"UTKFace folder not found: {root}")
    rows, malformed, others = [], [], 0
    for f in sorted(root.rglob("*")):
        if not f.is_file() or f.name.startswith("."):
            continue
        parsed = parse_utkface_name(f.name)
        if parsed is None:
            if f.suffix.lower() in IMG_EXT:
                malformed.append(f.name)
            continue
        age, gender, race = parsed
        if race == OTHERS:
            others += 1
            continue
        rows.append({"path": f.relative_to(root).as_posix(), "label": gender, "group": race, "age": age})
    if not rows:
        raise SynaugError(f"no UTKFace images (age_gender_race_date.jpg) under {root}"
                          + (f"; {len(malformed)} image names did not parse, e.g. {malformed[0]!r}" if malformed else ""))
    if (malformed or others) and not quiet:
        msg = f"utkface: using {len(rows)} images; dropped {others} with race 4 (others)"
        if malformed:
            msg += f"; skipped {len(malformed)} malformed names (e.g. {malformed[0]!r})"
        print(f"synaug: {msg}", file=sys.stderr)
    strata = np.array([r["label"] * len(UTK_GROUPS) + r["group"] for r in rows])
    for r, s in zip(rows, stratified_split(strata, val_frac, test_frac, seed)):
        r["split"] = s
    return Manifest.from_records(rows, UTK_CLASSES, {"real": root}, UTK_GROUPS)
