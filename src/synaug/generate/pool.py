"""Pool backend: fill each cell with images taken from an existing labelled manifest.

Used for the paper's "web-crawled real images" baseline (a disjoint pool of real images),
for pre-generated images, and for the offline CPU demo, where no Stable Diffusion weights
exist and a held-out real pool passed through :func:`synthetic_domain_shift` stands in for
generated images. Sampling is without replacement and deterministic: the ``i``-th image of a
cell is ``perm[i]`` of a permutation seeded by (run seed, cell), so it does not depend on batch
size, workers or resume. Images are re-encoded as PNG under the output folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from ..errors import SynaugError
from ..manifest import Manifest
from ..plan import Plan
from .base import Item, derive_seed

# The "synthetic-domain" shift, exactly (applied at the output resolution, in this order):
SATURATION = 1.5            # 1. PIL ImageEnhance.Color factor: colours 50 % more saturated
BLUR_RADIUS = 0.6           # 2. PIL GaussianBlur radius in pixels: smooth, "too clean" texture
CAST = (1.06, 1.0, 0.92)    # 3. per-channel gain (R, G, B), clipped to [0, 255]: a warm colour cast


def synthetic_domain_shift(img: Image.Image) -> Image.Image:
    """Deterministic stand-in for the synthetic-vs-real domain gap (no randomness).

    Diffusion samples tend to be over-saturated, smoother than camera images and tinted;
    this applies: saturation x1.5 (``ImageEnhance.Color``), Gaussian blur radius 0.6 px,
    then a warm cast multiplying R by 1.06 and B by 0.92 (rounded, clipped to 0..255).
    """
    img = ImageEnhance.Color(img.convert("RGB")).enhance(SATURATION)
    img = img.filter(ImageFilter.GaussianBlur(radius=BLUR_RADIUS))
    a = np.asarray(img, dtype=np.float32) * np.asarray(CAST, dtype=np.float32)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "RGB")


class PoolGenerator:
    """Serve planned images from ``pool`` (a manifest), without replacement.

    Parameters
    ----------
    plan : Plan
        Which cells need how many images; every cell's need is checked up front.
    pool : Manifest
        Labelled images; matched to cells by class name (and group name if ``match_groups``).
    run_seed : int
        Seeds each cell's permutation.
    name : str
        Recorded as ``pool:<name>`` (``+synthetic-domain`` when shifted).
    """

    def __init__(self, plan: Plan, pool: Manifest, run_seed: int, name: str, shift: str = "none",
                 split: str | None = "train", match_groups: bool = True, resolution: int = 32,
                 resize_filter: str = "lanczos"):
        self.shift = shift
        self.name = f"pool:{name}" + ("+synthetic-domain" if shift == "synthetic-domain" else "")
        df = pool.df if split is None else pool.df[pool.df["split"] == split]
        if df.empty:
            raise SynaugError(f"pool manifest has no rows{'' if split is None else f' in split {split!r}'}")
        abspaths = np.asarray([str(pool.roots[s] / p) for s, p in zip(df["source"], df["path"])], dtype=object)
        self._sources: dict[str, np.ndarray] = {}
        for cell in plan.cells:
            if cell.synthetic == 0:
                continue
            mask = (df["class_name"] == cell.class_name).to_numpy()
            if cell.group >= 0 and match_groups:
                if pool.groups is None:
                    raise SynaugError(f"plan cell {cell.key} has group {cell.group_name!r} but the pool has "
                                      "no groups (set pool.match_groups: false to ignore groups)")
                mask = mask & (df["group_name"] == cell.group_name).to_numpy()
            cand = np.sort(abspaths[mask])
            what = f"class {cell.class_name!r}"
            if cell.group >= 0 and match_groups:
                what += f", group {cell.group_name!r}"
            if len(cand) < cell.synthetic:
                raise SynaugError(f"pool has {len(cand)} images of {what} but the plan needs {cell.synthetic} "
                                  "(sampling is without replacement)")
            rng = np.random.default_rng(derive_seed(run_seed, cell.key, 0, purpose="pool"))
            self._sources[cell.key] = cand[rng.permutation(len(cand))[: cell.synthetic]]
        self.resolution, self.resize_filter = resolution, resize_filter

    def source_of(self, item: Item) -> str:
        """Absolute path of the pool image that becomes ``item``."""
        return str(self._sources[item.cell.key][item.index])

    def generate(self, items: Sequence[Item], seeds: Sequence[int]) -> list[Image.Image]:
        from .base import to_square

        out = []
        for it in items:
            src = self.source_of(it)
            try:
                with Image.open(src) as im:
                    img = to_square(im, self.resolution, self.resize_filter)
            except (OSError, ValueError) as e:
                raise SynaugError(f"cannot read pool image {src}: {type(e).__name__}: {e}") from None
            out.append(synthetic_domain_shift(img) if self.shift == "synthetic-domain" else img)
        return out


def load_pool(plan: Plan, cfg) -> PoolGenerator:
    """Build the pool backend from ``cfg.pool`` (see :class:`synaug.generate.config.PoolConfig`)."""
    pc = cfg.pool
    if not pc.manifest:
        raise SynaugError("backend pool needs pool.manifest (a manifest of the images to draw from)")
    pool = Manifest.read(pc.manifest, root=pc.root)
    if not set(c.class_name for c in plan.cells if c.synthetic) <= set(pool.classes):
        missing = next(c.class_name for c in plan.cells if c.synthetic and c.class_name not in pool.classes)
        raise SynaugError(f"pool manifest {pc.manifest} has no class {missing!r}")
    name = pc.name or Path(pc.manifest).stem
    return PoolGenerator(plan, pool, cfg.seed, name, pc.shift, pc.split, pc.match_groups,
                         cfg.resolution, cfg.resize_filter)
