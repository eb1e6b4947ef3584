"""Shared, generic fixtures. Keep this small: dataset-specific fixtures live in their test files."""
from __future__ import annotations

import os

# The suite runs as two xdist workers on two cores: one intra-op thread per worker (and per
# CLI subprocess, which inherits this) avoids OpenMP oversubscription, which slows tiny
# convolutions 10-20x. Set before torch is imported anywhere.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# amp: auto resolves to fp32 in every test (and CLI subprocess) on every CPU, so the suite's
# numerical tolerances hold on bf16 CPUs too; tests/test_precision.py checks the probe itself.
os.environ.setdefault("SYNAUG_CPU_BF16", "0")

from pathlib import Path

import numpy as np
import pytest

from synaug.manifest import Manifest


@pytest.fixture
def write_image():
    """``write_image(path, size=(32, 32), mode="RGB", seed=0)``: a small random image file."""

    def _write(path, size=(32, 32), mode="RGB", seed=0):
        from PIL import Image

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.RandomState(seed)
        channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
        arr = rng.randint(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
        Image.fromarray(arr[..., 0] if channels == 1 else arr, mode).save(path)
        return path

    return _write


@pytest.fixture
def make_manifest(tmp_path):
    """``make_manifest(counts, split="train", groups=None, classes=None)``: rows only, no files.

    ``counts`` is per class (length C) or per (class, group) (shape C x G, then group names
    ``g0..`` unless ``groups`` is given). Paths are ``<split>/<label>/<group>/<i>.png``.
    """

    def _make(counts, split="train", groups=None, classes=None, extra_splits=None):
        counts = np.asarray(counts, dtype=int)
        cc = counts[:, None] if counts.ndim == 1 else counts
        C, G = cc.shape
        has_groups = counts.ndim == 2
        rows = []
        for s, table in [(split, cc)] + [(k, np.asarray(v).reshape(C, -1)) for k, v in (extra_splits or {}).items()]:
            for c in range(C):
                for g in range(G):
                    for i in range(int(table[c, g])):
                        rows.append({"path": f"{s}/{c}/{g}/{i}.png", "label": c, "split": s,
                                     "group": g if has_groups else -1})
        if has_groups and groups is None:
            groups = [f"g{g}" for g in range(G)]
        classes = classes or [f"c{c}" for c in range(C)]
        return Manifest.from_records(rows, classes, {"real": tmp_path}, groups if has_groups else None)

    return _make


@pytest.fixture
def image_folder(tmp_path, write_image):
    """A tiny ImageFolder tree ``root/{train,test}/{cat,dog,fox}/*.png`` (32x32 RGB).

    Train counts: cat 6, dog 3, fox 1; test: 2 each. Returns the root.
    """
    root = tmp_path / "imgs"
    seed = 0
    for split, counts in (("train", {"cat": 6, "dog": 3, "fox": 1}), ("test", {"cat": 2, "dog": 2, "fox": 2})):
        for cls, n in counts.items():
            for i in range(n):
                seed += 1
                write_image(root / split / cls / f"{i}.png", seed=seed)
    return root


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one torch thread is faster and immune to OpenMP spin under CPU contention.

    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
