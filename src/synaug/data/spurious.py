"""A spurious-correlation benchmark in the Waterbirds mould, built from the shared data
(Table 4 at CPU scale; no Waterbirds images exist offline). It is a PROXY, not Waterbirds.

``shared-cifar10-spurious`` (real CIFAR-10 JPEGs):

* label: two CIFAR-10 classes (default ``airplane`` vs ``automobile``), the analogue of
  landbird vs waterbird;
* attribute (``group``, the analogue of Waterbirds' place): a coloured border painted onto
  the image, ``red`` or ``blue`` (:func:`paint_border`: the outer ``border`` pixels of each
  side set to :data:`COLOURS`), a feature a CNN picks up at once;
* training: ``train_per_class`` images per class, ``majority`` (95 %) of them on the class's
  majority attribute (class ``k`` on attribute ``k``: airplane/red, automobile/blue), the rest
  on the other one; validation and test balanced over the four class x attribute cells
  (``val_per_cell`` from held-out training images, ``test_per_cell`` from the CIFAR-10 test
  images). Worst-group accuracy is over the class x attribute cells ("airplane/blue" ...).

``shared-sd14-spurious`` (Stable Diffusion 1.4 images of CIFAKE, ``shared-sd14``): the same two
classes, each image painted with ONE attribute (a seeded half of each class red, the other
half blue), ``source == "synthetic"``. A SYNAuG run fills the minority cells from it with the
pool backend (``generate: {backend: pool, pool: {dataset: shared-sd14-spurious, options:
...}}``), matched by class and group name: Stable Diffusion images of the class carrying the
minority attribute, the analogue of "The photo of {bird} in {place}".

Images are rendered once (deterministically from the options) into the cache folder
(``$SYNAUG_CACHE/<name>-<hash of the options>``), in a temp folder renamed at the end under a
file lock, like :func:`synaug.data.shared.extract_shared`.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import SynaugError
from ..manifest import Manifest
from .registry import register_dataset
from .shared import CIFAR10_CLASSES, SD14_GENERATOR, cache_dir, extract_shared

ATTRIBUTES = ["red", "blue"]
#: RGB of each attribute's border
COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220)}
_VERSION = 1
SD_SPURIOUS_GENERATOR = SD14_GENERATOR + ", border painted by synaug"


def paint_border(arr: np.ndarray, colour: Sequence[int], width: int) -> np.ndarray:
    """A copy of the ``(H, W, 3)`` uint8 image with its outer ``width`` pixels set to ``colour``."""
    out = np.array(arr, dtype=np.uint8, copy=True)
    if width <= 0:
        return out
    c = np.asarray(colour, dtype=np.uint8)
    out[:width], out[-width:], out[:, :width], out[:, -width:] = c, c, c, c
    return out


def _check_classes(classes) -> list[str]:
    classes = [str(c) for c in classes]
    if len(classes) != 2 or len(set(classes)) != 2:
        raise SynaugError(f"spurious benchmark: classes must be two different CIFAR-10 classes, got {classes}")
    bad = [c for c in classes if c not in CIFAR10_CLASSES]
    if bad:
        raise SynaugError(f"spurious benchmark: unknown CIFAR-10 class {bad[0]!r} "
                          f"(known: {', '.join(CIFAR10_CLASSES)})")
    return classes


def _render_once(name: str, options: dict, cache: str | Path | None,
                 build: Callable[[Path], list[dict]]) -> tuple[Path, list[dict]]:
    """Render a dataset once per ``options`` into the cache; returns (folder, rows)."""
    key = hashlib.sha256(json.dumps({"v": _VERSION, **options}, sort_keys=True).encode()).hexdigest()[:12]
    out = Path(cache) if cache else cache_dir() / f"{name}-{key}"
    index = out / "rows.json"
    if not (out / ".complete").is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out.parent / f".{out.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (out / ".complete").is_file():
                tmp = out.with_name(out.name + f".tmp{os.getpid()}")
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                rows = build(tmp)
                (tmp / "rows.json").write_text(json.dumps({"options": options, "rows": rows}))
                (tmp / ".complete").write_text("ok\n")
                if out.exists():
                    shutil.rmtree(out)
                os.replace(tmp, out)
    try:
        return out, json.loads(index.read_text())["rows"]
    except (OSError, ValueError, KeyError) as e:
        raise SynaugError(f"damaged rendered dataset {out} ({type(e).__name__}); delete the folder") from None


def _paint_files(jobs: list[tuple[Path, Path, str]], width: int) -> None:
    """Paint ``(source file, target file, attribute)`` jobs (PNG out, two threads)."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    def one(job):
        s, t, attr = job
        with Image.open(s) as im:
            arr = np.asarray(im.convert("RGB"))
        t.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(paint_border(arr, COLOURS[attr], width), "RGB").save(t)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, jobs, chunksize=64))


def _jpgs(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise SynaugError(f"missing folder {folder} in the extracted archive")
    return sorted(f for f in os.listdir(folder) if f.endswith(".jpg"))


@register_dataset("shared-cifar10-spurious")
def shared_cifar10_spurious(root: str | Path | None = None, classes: Sequence[str] = ("airplane", "automobile"),
                            majority: float = 0.95, train_per_class: int = 1000, val_per_cell: int = 100,
                            test_per_cell: int = 500, border: int = 3, seed: int = 0,
                            cache: str | Path | None = None) -> Manifest:
    """Two CIFAR-10 classes with a painted border attribute, 95 % spuriously correlated in
    training; validation and test balanced over class x attribute (see the module docstring).

    Parameters
    ----------
    root : path, optional
        The shared data folder (default: found as for ``shared-cifar10``).
    classes : two CIFAR-10 class names; class ``k``'s majority attribute is ``ATTRIBUTES[k]``.
    majority : share of each class's training images on its majority attribute.
    train_per_class, val_per_cell, test_per_cell : split sizes (val from held-out training
        images; test from the CIFAR-10 test images, at most 500 per cell).
    border : border width in pixels (of the 32 x 32 image).
    seed : seeds which images go where.
    cache : folder to render into (default: the synaug cache).
    """
    classes = _check_classes(classes)
    if not 0.5 <= float(majority) <= 1.0:
        raise SynaugError(f"spurious benchmark: majority must be in [0.5, 1], got {majority}")
    for name, v in (("train_per_class", train_per_class), ("val_per_cell", val_per_cell),
                    ("test_per_cell", test_per_cell), ("border", border)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "border" else 1):
            raise SynaugError(f"spurious benchmark: {name} must be a positive integer, got {v!r}")
    if train_per_class + 2 * val_per_cell > 5000:
        raise SynaugError("spurious benchmark: train_per_class + 2 * val_per_cell exceeds the 5,000 CIFAR-10 "
                          "training images of a class")
    if test_per_cell > 500:
        raise SynaugError("spurious benchmark: test_per_cell is at most 500 (1,000 test images per class)")
    src = extract_shared("cifar10", root)
    opts = {"classes": classes, "majority": float(majority), "train_per_class": train_per_class,
            "val_per_cell": val_per_cell, "test_per_cell": test_per_cell, "border": border, "seed": seed}

    def build(tmp: Path) -> list[dict]:
        rng = np.random.RandomState(seed)
        rows, jobs = [], []
        for label, cls in enumerate(classes):
            major, minor = label, 1 - label
            files = _jpgs(src / "train" / cls)
            perm = rng.permutation(len(files))
            n_major = int(round(float(majority) * train_per_class))
            plan = ([("train", major)] * n_major + [("train", minor)] * (train_per_class - n_major)
                    + [("val", 0)] * val_per_cell + [("val", 1)] * val_per_cell)
            for (split, g), i in zip(plan, perm):
                files_i = files[i]
                rel = f"{split}/{cls}/{ATTRIBUTES[g]}/{Path(files_i).stem}.png"
                jobs.append((src / "train" / cls / files_i, tmp / rel, ATTRIBUTES[g]))
                rows.append({"path": rel, "label": label, "group": g, "split": split})
            tfiles = _jpgs(src / "test" / cls)
            tperm = rng.permutation(len(tfiles))
            for k, i in enumerate(tperm[:2 * test_per_cell]):
                g = k // test_per_cell
                rel = f"test/{cls}/{ATTRIBUTES[g]}/{Path(tfiles[i]).stem}.png"
                jobs.append((src / "test" / cls / tfiles[i], tmp / rel, ATTRIBUTES[g]))
                rows.append({"path": rel, "label": label, "group": g, "split": "test"})
        _paint_files(jobs, border)
        return rows

    folder, rows = _render_once("cifar10-spurious", opts, cache, build)
    return Manifest.from_records(rows, classes, {"real": folder}, ATTRIBUTES)


@register_dataset("shared-sd14-spurious")
def shared_sd14_spurious(root: str | Path | None = None, classes: Sequence[str] = ("airplane", "automobile"),
                         per_class: int | None = None, border: int = 3, seed: int = 0,
                         cache: str | Path | None = None) -> Manifest:
    """Stable Diffusion 1.4 images (CIFAKE) of the two classes, each painted with one attribute
    (a seeded half of every class ``red``, the other half ``blue``); synthetic-only, all rows
    ``split == "train"``, ``generator`` = :data:`SD_SPURIOUS_GENERATOR`.

    Parameters
    ----------
    per_class : at most this many SD images per class (default: all, about 4,900).
    border, seed, cache : as for ``shared-cifar10-spurious`` (use the same ``border``).
    """
    classes = _check_classes(classes)
    if per_class is not None and (isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 2):
        raise SynaugError(f"shared-sd14-spurious: per_class must be an integer >= 2, got {per_class!r}")
    src = extract_shared("sd14", root)
    opts = {"classes": classes, "per_class": per_class, "border": border, "seed": seed}

    def build(tmp: Path) -> list[dict]:
        rng = np.random.RandomState(seed + 1)
        rows, jobs = [], []
        for label, cls in enumerate(classes):
            files = _jpgs(src / "sd14" / cls)
            perm = rng.permutation(len(files))[:per_class or len(files)]
            half = len(perm) // 2
            for k, i in enumerate(perm):
                g = 0 if k < half else 1
                rel = f"sd14/{cls}/{ATTRIBUTES[g]}/{Path(files[i]).stem}.png"
                jobs.append((src / "sd14" / cls / files[i], tmp / rel, ATTRIBUTES[g]))
                rows.append({"path": rel, "label": label, "group": g, "split": "train", "source": "synthetic",
                             "generator": SD_SPURIOUS_GENERATOR, "cifake_file": f"sd14/{cls}/{files[i]}"})
        _paint_files(jobs, border)
        return rows

    folder, rows = _render_once("sd14-spurious", opts, cache, build)
    return Manifest.from_records(rows, classes, {"synthetic": folder}, ATTRIBUTES)
