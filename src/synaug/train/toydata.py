"""Tiny learnable image data sets written as PNG files (tests, demos, smoke runs).

Each class has its own colour pattern plus noise, so a small network learns it in a few
epochs; an optional group attribute changes the background brightness.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..manifest import Manifest


def make_toy_manifest(root: str | Path, counts: Sequence[int] | dict, num_classes: int | None = None,
                      size: int = 32, groups: Optional[Sequence[str]] = None, seed: int = 0,
                      split: str = "train", source: str = "real", noise: float = 40.0,
                      prefix: str = "") -> Manifest:
    """Write PNGs under ``root`` and return their manifest.

    Parameters
    ----------
    root : path
        Folder for the images (the manifest's root for ``source``).
    counts : sequence of int, or dict
        Images per class, or per ``(class, group)`` cell as ``{(c, g): n}``.
    size : int
        Image side in pixels.
    groups : list of str, optional
        Group names; with a dict of cell counts each image gets its group.
    split, source : str
        Values of those columns for every row.
    """
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    if isinstance(counts, dict):
        cells = list(counts.items())
        C = num_classes or (max(c for (c, _) in counts) + 1)
    else:
        C = num_classes or len(counts)
        cells = [((c, -1), n) for c, n in enumerate(counts)]
    classes = [f"class{c}" for c in range(C)]
    palette = np.random.default_rng(1234).uniform(40, 215, size=(C, 3))
    rows = []
    for (c, g), n in cells:
        d = root / f"{prefix}{split}" / classes[c]
        d.mkdir(parents=True, exist_ok=True)
        for i in range(int(n)):
            img = np.empty((size, size, 3))
            img[:] = palette[c]
            # a class-specific stripe makes the task spatial, not only colour
            img[:, (c * 3) % size:(c * 3) % size + max(size // 8, 1)] = 255 - palette[c]
            if g >= 0:
                img += 30.0 * (g - 0.5)
            img += rng.normal(0, noise, size=img.shape)
            name = f"{g}_{i:05d}.png" if g >= 0 else f"{i:05d}.png"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / name)
            rows.append({"path": f"{prefix}{split}/{classes[c]}/{name}", "label": c, "split": split,
                         "source": source, "group": g})
    return Manifest.from_records(rows, classes, {source: root}, list(groups) if groups else None)
