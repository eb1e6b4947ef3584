"""What a fit learns from: the real training images of a class (or of every class), their
captions, and the order and augmentation in which a fit sees them.

Only rows with ``split == "train"`` and ``source == "real"`` are ever read: validation and
test images never enter a fit, and neither do synthetic images. Every random choice of step
``s`` comes from a generator seeded by (seed, unit, s), so a resumed fit draws exactly what an
uninterrupted one would, whatever was drawn before.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import SynaugError
from ...manifest import Manifest
from ...prompts import TASKS, display_name, placeholders, without_modifier
from ..base import derive_seed

#: below this many images a class is outside DreamBooth's few-shot regime (3-5 images)
FEW_SHOT = 3
_CAPTION_FIELDS = {"class", "group"}


@dataclass(frozen=True)
class Unit:
    """One adapter to fit: ``key`` names its folder, ``classes`` the classes it covers,
    ``rows`` the real training images it learns from (sorted by path)."""

    key: str
    classes: tuple[str, ...]
    rows: Manifest

    def paths(self) -> list[Path]:
        return self.rows.abspaths()


def fit_rows(real: Manifest) -> Manifest:
    """The rows a fit may read: real training images only (never val, test or synthetic)."""
    df = real.df
    return real.select(((df["split"] == "train") & (df["source"] == "real")).to_numpy())


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "class"


def make_units(real: Manifest, per: str, classes: Sequence[str] | None = None) -> list[Unit]:
    """Units to fit: one per class in ``classes`` (``per == "class"``), or one over every class
    with a real training image (``per == "dataset"``). Each class in ``classes`` needs at least
    one real training image; by default, every class that has one."""
    rows = fit_rows(real)
    counts = dict(zip(real.classes, rows.class_counts(None)))
    wanted = [c for c in real.classes if counts[c] > 0] if classes is None else list(classes)
    unknown = [c for c in wanted if c not in real.classes]
    if unknown:
        raise SynaugError(f"fit: class {unknown[0]!r} is not a class of the data ({', '.join(real.classes[:8])} ...)")
    if not wanted:
        raise SynaugError("fit: the data has no real training image")
    empty = [c for c in wanted if counts[c] == 0]
    if empty:
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise SynaugError(f"fit: class {empty[0]!r}{more} has no real training image to fit an adapter on; "
                          "add images of it, or generate it without a fitted adapter")
    if per == "dataset":
        covered = tuple(c for c in real.classes if counts[c] > 0)
        return [Unit("dataset", covered, _sorted(rows))]
    units = []
    for c in wanted:
        label = real.classes.index(c)
        units.append(Unit(f"{label:03d}_{safe_name(c)}", (c,), _sorted(rows.select((rows.df["class_name"] == c).to_numpy()))))
    return units


def _sorted(m: Manifest) -> Manifest:
    return Manifest(m.df.sort_values("path", kind="stable").reset_index(drop=True), m.classes, m.roots, m.groups)


def few_shot_warnings(units: Sequence[Unit], wanted: Sequence[str] | None = None) -> list[str]:
    """What the fit does with fewer than :data:`FEW_SHOT` images of a class, said once per class."""
    out = []
    for u in units:
        counts = u.rows.df["class_name"].value_counts()
        for c in u.classes if wanted is None else [c for c in u.classes if c in wanted]:
            n = int(counts.get(c, 0))
            if 0 < n < FEW_SHOT:
                what = "that one image" if n == 1 else f"those {n} images"
                out.append(f"fit: class {c!r} has {n} real training image{'s' * (n > 1)}: its adapter is fitted to "
                           f"{what} (redrawn every step, randomly flipped) and may reproduce {'it' if n == 1 else 'them'}; "
                           f"DreamBooth's regime is 3-5 images (fewer steps or prior_preservation limit the copying)")
    return out


def images_digest(unit: Unit) -> str:
    """sha256 over the unit's image paths and bytes: a changed or replaced image changes it."""
    h = hashlib.sha256()
    for rel, p, c in zip(unit.rows.df["path"], unit.paths(), unit.rows.df["class_name"]):
        h.update(f"{rel}\0{c}\0".encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


# ---------------------------------------------------------------------------- captions
def caption_template(fit_template: str | None, gen=None) -> str:
    """The fit's caption template: ``fit.template``, else generation's template without
    ``{modifier}`` (the prompt template shared with generation), else ``a photo of {class}``."""
    if fit_template is not None:
        t = fit_template
    elif gen is not None and not gen.prompts:
        t = without_modifier(gen.template if gen.template is not None else TASKS[gen.task].template)
    else:
        t = "a photo of {class}"
    return check_template(t, gen.task if gen is not None else "plain")


def check_template(template: str, task: str = "plain") -> str:
    names = set(placeholders(template))
    aliases = TASKS[task].aliases if task in TASKS else {}
    bad = sorted(n for n in names if aliases.get(n, n) not in _CAPTION_FIELDS)
    if bad:
        raise SynaugError(f"fit caption template {template!r} uses {{{bad[0]}}}, which real images do not carry; "
                          "set fit.template with {class} (and {group}) only, e.g. 'a photo of {class}'")
    if "class" not in {aliases.get(n, n) for n in names}:
        raise SynaugError(f"fit caption template {template!r} must name the class ({{class}})")
    return template


def token_of(class_name: str) -> str:
    """The textual-inversion token of a class: ``<class_name>`` (DA-Fusion's convention)."""
    return f"<{safe_name(class_name)}>"


def subject(method: str, class_name: str, identifier: str = "sks") -> str:
    """What stands for the class in captions and prompts: its name (lora), its learned token
    (textual_inversion), or identifier + name (dreambooth_lora: "a photo of sks dog")."""
    if method == "textual_inversion":
        return token_of(class_name)
    if method == "dreambooth_lora":
        return f"{identifier} {display_name(class_name)}"
    return display_name(class_name)


def caption(template: str, task: str, class_words: str, group_name: str = "") -> str:
    aliases = TASKS[task].aliases if task in TASKS else {}
    values = {}
    for n in placeholders(template):
        src = aliases.get(n, n)
        values[n] = class_words if src == "class" else display_name(group_name)
    return " ".join(template.format_map(values).split())


# ---------------------------------------------------------------------------- images
def load_image(path: str | Path, size: int) -> "torch.Tensor":
    """An image as uint8 CHW at ``size`` x ``size``: centre square crop, bilinear resize
    (the recipes' ``Resize`` + ``CenterCrop``)."""
    import torch
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        if s != size:
            im = im.resize((size, size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)


class ImageBank:
    """Decoded images of one unit, kept in memory up to a budget (a class is seen many times)."""

    def __init__(self, paths: Sequence[Path], size: int, budget_bytes: int = 512 << 20):
        self.paths, self.size, self.budget = list(paths), size, budget_bytes
        self._cache: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, i: int):
        img = self._cache.get(i)
        if img is None:
            img = load_image(self.paths[i], self.size)
            if (len(self._cache) + 1) * img.numel() <= self.budget:
                self._cache[i] = img
        return img

    def batch(self, idx: Sequence[int], flips) -> "torch.Tensor":
        """Float pixels in [-1, 1], shape (B, 3, size, size); ``flips[b]`` mirrors image b."""
        import torch

        out = torch.stack([self.get(int(i)) for i in idx]).float().div_(127.5).sub_(1.0)
        f = torch.as_tensor(flips, dtype=torch.bool)
        if f.any():
            out[f] = out[f].flip(-1)
        return out


class Order:
    """Which images step ``s`` sees: epochs of seeded permutations, ``batch`` per step (as a
    shuffled DataLoader), drawn from (seed, unit, epoch) alone."""

    def __init__(self, n: int, batch: int, seed: int, key: str, purpose: str = "fit-order"):
        self.n, self.batch, self.seed, self.key, self.purpose = n, batch, seed, key, purpose
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            rng = np.random.default_rng(derive_seed(self.seed, self.key, epoch, self.purpose))
            self._perms = {epoch: rng.permutation(self.n)}  # only the current epoch is kept
        return self._perms[epoch]

    def indices(self, step: int) -> list[int]:
        out = []
        for pos in range(step * self.batch, (step + 1) * self.batch):
            out.append(int(self._perm(pos // self.n)[pos % self.n]))
        return out
