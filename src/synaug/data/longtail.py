"""Long-tailed versions of balanced datasets, exactly as the community builds them.

LDAM-DRW convention (Cao et al., 2019, ``IMBALANCECIFAR``): class ``c`` keeps
``int(img_max * (1/IF) ** (c / (C - 1)))`` images, class 0 is the head, and the kept
images are the first ``n_c`` of a within-class shuffle drawn from one ``RandomState(seed)``
that visits classes in label order.
"""
from __future__ import annotations

import numpy as np

from ..errors import SynaugError
from ..manifest import Manifest


def long_tail_counts(num_classes: int, img_max: int, imbalance_factor: float) -> list[int]:
    """Per-class counts, head first: ``n_c = floor(img_max * IF^(-c/(C-1)))``.

    >>> sum(long_tail_counts(100, 500, 100))
    10847
    """
    if num_classes < 1 or img_max < 1:
        raise SynaugError("num_classes and img_max must be positive")
    if imbalance_factor < 1:
        raise SynaugError(f"imbalance factor must be >= 1, got {imbalance_factor}")
    if num_classes == 1:
        return [int(img_max)]
    imb = 1.0 / imbalance_factor  # same float expression as the reference code
    return [int(img_max * (imb ** (c / (num_classes - 1.0)))) for c in range(num_classes)]


def make_long_tail(manifest: Manifest, imbalance_factor: float, seed: int = 0,
                   img_max: int | None = None, split: str = "train") -> tuple[Manifest, Manifest]:
    """Long-tail the ``split`` rows of a balanced manifest.

    Returns ``(long_tailed, held_out)``: the long-tailed manifest (other splits untouched)
    and the ``split`` rows the draw did not keep (a disjoint real pool).
    """
    df = manifest.df
    is_split = (df["split"] == split).to_numpy()
    labels = df["label"].to_numpy()
    per_class = np.bincount(labels[is_split], minlength=manifest.num_classes)
    if img_max is None:
        img_max = int(per_class.max())
    counts = long_tail_counts(manifest.num_classes, img_max, imbalance_factor)
    rng = np.random.RandomState(seed)
    keep = np.zeros(len(df), dtype=bool)
    for c, n_c in enumerate(counts):
        idx = np.flatnonzero(is_split & (labels == c))
        if len(idx) < n_c:
            raise SynaugError(f"class {manifest.classes[c]!r} has {len(idx)} {split} images, "
                              f"the long tail needs {n_c}")
        rng.shuffle(idx)
        keep[idx[:n_c]] = True
    lt = manifest.select(keep | ~is_split)
    held = manifest.select(is_split & ~keep)
    return lt, held
