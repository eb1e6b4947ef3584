"""Kept vs rejected examples of a selection, as one PNG (rows = classes)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..manifest import Manifest

EXAMPLES = 6  # kept and rejected examples per class
SIDE = 32   # thumbnail side in pixels
GAP = 8     # blank columns between the kept and the rejected examples


def kept_rejected_grid(cands: Manifest, kept: np.ndarray, n: int, out: Path,
                       seed: int = 0) -> Path:
    """Per class, ``n`` kept (left) and ``n`` rejected (right) candidates, drawn at random
    (seeded); written atomically as PNG."""
    from PIL import Image

    from ..io import atomic_path

    lab = cands.df["label"].to_numpy()
    paths = cands.abspaths()
    classes = sorted(set(lab.tolist()))
    rng = np.random.default_rng(seed)
    grid = Image.new("RGB", (2 * n * SIDE + GAP, len(classes) * SIDE), (255, 255, 255))
    for r, c in enumerate(classes):
        for side, mask in ((0, kept), (1, ~kept)):
            rows = np.flatnonzero((lab == c) & mask)
            for j, i in enumerate(rng.permutation(rows)[:n]):
                with Image.open(paths[i]) as im:
                    thumb = im.convert("RGB").resize((SIDE, SIDE))
                grid.paste(thumb, (side * (n * SIDE + GAP) + j * SIDE, r * SIDE))
    with atomic_path(out) as tmp:
        grid.save(tmp, format="PNG")
    return out
