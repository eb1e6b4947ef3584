"""ImageNet-LT style split lists (``ImageNet_LT_train.txt``: one ``<path> <label>`` per line).

Used for ImageNet100-LT (Jiang et al., 2021). Paths are relative to the image root. Class
names come from an optional names file (one name per line in label order, or
``<label> <name>`` lines), else ``class_<label>``. When the labels are not ``0..K-1`` (a
subset of the 1000 ImageNet ids) they are mapped to ``0..K-1`` in sorted order and the
original id kept in an ``orig_label`` column.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import SynaugError
from ..manifest import Manifest
from .registry import register_dataset

SPLITS = ("train", "val", "test")


def read_split_list(path: Path) -> list[tuple[str, int]]:
    """``[(path, label), ...]`` from a ``<path> <label>`` file; blank and ``#`` lines skipped."""
    out = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SynaugError(f"cannot read split list {path}: {type(e).__name__}: {e}") from None
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or int(parts[1]) < 0:
            raise SynaugError(f"{path.name}:{n}: expected '<path> <label>', got {line!r}")
        out.append((parts[0], int(parts[1])))
    if not out:
        raise SynaugError(f"split list {path} is empty")
    return out


def read_names(path: Path) -> dict[int, str]:
    """Class names by label: a name per line, or ``<label> <name>`` lines."""
    if not path.is_file():
        raise SynaugError(f"class names file not found: {path}")
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    numbered = all(ln.split(None, 1)[0].isdigit() and len(ln.split(None, 1)) == 2 for ln in lines)
    if lines and numbered:
        return {int(ln.split(None, 1)[0]): ln.split(None, 1)[1].strip() for ln in lines}
    return dict(enumerate(lines))


def _resolve(p: str | Path, root: Path) -> Path:
    p = Path(p)
    return p if p.is_absolute() or p.is_file() else root / p


def _discover(root: Path) -> dict[str, Path]:
    found = {}
    for split in SPLITS:
        hits = sorted(f for f in root.glob(f"*{split}*.txt") if f.is_file())
        if len(hits) > 1:
            raise SynaugError(f"several {split} lists in {root} ({', '.join(h.name for h in hits)}); "
                              f"pass them with --dataset-opt {split}=FILE")
        if hits:
            found[split] = hits[0]
    return found


@register_dataset("imagenet-lt")
@register_dataset("imagenet100-lt")
def imagenet_lt(root: str | Path | None, train: str | Path | None = None, val: str | Path | None = None,
                test: str | Path | None = None, names: str | Path | None = None) -> Manifest:
    """Manifest from ImageNet-LT style split lists.

    Parameters
    ----------
    root : path
        Image root the listed paths are relative to; also where lists are looked for.
    train, val, test : path, optional
        Split list files (relative to ``root`` unless they exist as given). When none is
        given, ``root/*train*.txt`` etc. are used.
    names : path, optional
        Class names file.
    """
    if root is None:
        raise SynaugError("imagenet-lt needs --data-root (the image root with the split lists)")
    root = Path(root)
    given = {s: v for s, v in (("train", train), ("val", val), ("test", test)) if v is not None}
    lists = {s: _resolve(v, root) for s, v in given.items()} if given else _discover(root)
    if "train" not in lists:
        raise SynaugError(f"no train split list (e.g. ImageNet_LT_train.txt) under {root}")
    rows = []
    for split, f in lists.items():
        if not f.is_file():
            raise SynaugError(f"split list not found: {f}")
        rows += [{"path": p, "label": lab, "split": split} for p, lab in read_split_list(f)]
    df = pd.DataFrame(rows)
    labels = np.unique(df["label"])
    name_map = read_names(_resolve(names, root)) if names else {}
    if np.array_equal(labels, np.arange(len(labels))):
        num = max(len(labels), max(name_map, default=-1) + 1)
        classes = [name_map.get(i, f"class_{i}") for i in range(num)]
    else:  # a subset of a larger label space: compact it, keep the original id
        df["orig_label"] = df["label"].astype("int64")
        df["label"] = np.searchsorted(labels, df["label"].to_numpy())
        classes = [name_map.get(int(i), f"class_{int(i)}") for i in labels]
    if len(set(classes)) != len(classes):
        raise SynaugError("class names are not unique")
    return Manifest(df, classes, {"real": root})
