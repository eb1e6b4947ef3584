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
from ..data.read import read_manifest
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
        The pool's name. Each image records its own maker in the ``generator`` column: the
        pool row's ``generator`` when it has one (``shared-sd14``: "Stable Diffusion 1.4
        (CIFAKE)"), else ``pool:<name>`` (real images); ``+synthetic-domain`` when shifted.
        ``source_file`` records the pool image's path (relative to its root).
    replacement : bool
        A cell that needs more images than the pool has reuses them: every pool image once,
        then again in a new seeded order (the first images are those of ``replacement: false``).
    """

    def __init__(self, plan: Plan, pool: Manifest, run_seed: int, name: str, shift: str = "none",
                 split: str | None = "train", match_groups: bool = True, resolution: int = 32,
                 resize_filter: str = "lanczos", replacement: bool = False):
        self.shift = shift
        suffix = "+synthetic-domain" if shift == "synthetic-domain" else ""
        self.name = f"pool:{name}{suffix}"
        df = pool.df if split is None else pool.df[pool.df["split"] == split]
        if df.empty:
            raise SynaugError(f"pool {name!r} has no rows{'' if split is None else f' in split {split!r}'}")
        rel = df["path"].to_numpy(dtype=object)
        abspaths = np.asarray([str(pool.roots[s] / p) for s, p in zip(df["source"], rel)], dtype=object)
        makers = np.where(df["generator"].to_numpy(dtype=object) != "", df["generator"].to_numpy(dtype=object),
                          self.name[:-len(suffix)] if suffix else self.name)
        self._sources: dict[str, np.ndarray] = {}  # cell key -> row positions in df, in serving order
        self._abs, self._rel, self._makers, self._suffix = abspaths, rel, makers, suffix
        short = []  # (what, needed, available) of the cells the pool cannot fill
        avail = {}  # cell key -> pool images that can serve it
        for cell in plan.cells:
            if cell.synthetic == 0:
                continue
            mask = (df["class_name"] == cell.class_name).to_numpy()
            if cell.group >= 0 and match_groups:
                if pool.groups is None:
                    raise SynaugError(f"plan cell {cell.key} has group {cell.group_name!r} but the pool has "
                                      "no groups (set pool.match_groups: false to ignore groups)")
                mask = mask & (df["group_name"] == cell.group_name).to_numpy()
            cand = np.flatnonzero(mask)
            cand = cand[np.argsort(abspaths[cand], kind="stable")]
            what = f"class {cell.class_name!r}"
            if cell.group >= 0 and match_groups:
                what += f", group {cell.group_name!r}"
            avail[cell.key] = len(cand)
            if len(cand) < cell.synthetic and not (replacement and len(cand)):
                short.append((what, cell.synthetic, len(cand)))
                continue
            self._sources[cell.key] = _serving_order(cand, cell.synthetic, run_seed, cell.key)
        if short:
            raise SynaugError(_short_message(name, short, plan, avail))
        self.resolution, self.resize_filter = resolution, resize_filter

    #: images per written manifest part: a pool image is a copy, not a model call, so the diffusion
    #: backends' 8-image batches would mean thousands of tiny parquet parts (30,120 candidates: 3,765
    #: parts, a third of the copy's time); a kill still loses at most one part
    write_batch = 256

    def _row(self, item: Item) -> int:
        return int(self._sources[item.cell.key][item.index])

    def source_of(self, item: Item) -> str:
        """Absolute path of the pool image that becomes ``item``."""
        return str(self._abs[self._row(item)])

    def provenance(self, item: Item) -> dict:
        i = self._row(item)
        return {"generator": str(self._makers[i]) + self._suffix, "source_file": str(self._rel[i])}

    def identity(self, item: Item) -> str:
        """What decides ``item``'s image besides the config: the pool file it copies and its maker."""
        i = self._row(item)
        return f"{self._abs[i]}|{self._makers[i]}"

    def check_files(self) -> None:
        """Every pool image the plan uses exists and decodes (one message for all problems),
        checked before anything is written."""
        from ..data.files import bad_files_message, probe_all

        used = np.unique(np.concatenate([v for v in self._sources.values()] or [np.zeros(0, int)]))
        found = probe_all([self._abs[i] for i in used])
        bad = [(repr(str(self._abs[i])), why) for i, (_, why) in zip(used, found) if why is not None]
        if bad:
            raise SynaugError(bad_files_message(bad, len(used), "pool images the plan uses",
                                                "Fix or remove them from the pool; nothing was generated."))

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


def _serving_order(cand: np.ndarray, need: int, run_seed: int, key: str) -> np.ndarray:
    """Pool rows serving a cell's images 0..need-1: a seeded permutation of ``cand``; past its
    end (``replacement``) further permutations, each seeded by its round."""
    rounds = []
    for r in range(-(-need // len(cand)) if len(cand) else 0):
        rng = np.random.default_rng(derive_seed(run_seed, key, r, purpose="pool"))
        rounds.append(cand[rng.permutation(len(cand))])
    return np.concatenate(rounds)[:need] if rounds else cand[:0]


def _short_message(name: str, short: list, plan: Plan, avail: dict) -> str:
    """One line: the cells the pool cannot fill (first, and how many), and how to go on."""
    what, need, have = short[0]
    more = f" (and {len(short) - 1} more cell{'s' if len(short) > 2 else ''})" if len(short) > 1 else ""
    cap = min(c.real + avail[c.key] for c in plan.cells if c.key in avail)
    return (f"pool {name!r} cannot fill {what}: the plan needs {need} images, the pool has {have}{more}. To go on: "
            f"lower the plan's target (plan.target in a run config, synaug plan --target) to {cap} or less (the "
            "count every class can reach with this pool), add images to the pool, or set "
            "generate.pool.replacement: true to reuse pool images")


def load_pool(plan: Plan, cfg) -> PoolGenerator:
    """Build the pool backend from ``cfg.pool`` (see :class:`synaug.generate.config.PoolConfig`):
    a manifest file (a plain CSV needs no ``split`` column), a folder of class sub-folders,
    or a registered dataset (``dataset: shared-sd14``)."""
    pc = cfg.pool
    if bool(pc.manifest) == bool(pc.dataset):
        raise SynaugError("backend pool needs exactly one of pool.manifest (a manifest file) or "
                          "pool.dataset (a dataset name, e.g. shared-sd14)")
    if pc.dataset:
        from ..data import load_dataset

        pool = load_dataset(pc.dataset, pc.root, **pc.options)
        name = pc.name or pc.dataset
    else:  # a manifest file, or a folder of class sub-folders (ImageFolder)
        pool = read_manifest(pc.manifest, root=pc.root)
        name = pc.name or Path(pc.manifest).stem
    for c in plan.cells:
        if c.synthetic and c.class_name not in pool.classes:
            raise SynaugError(f"pool {name!r} cannot fill class {c.class_name!r}: the plan needs {c.synthetic} "
                              f"images, the pool has 0 (its classes: {', '.join(pool.classes[:12])}"
                              f"{', ...' if len(pool.classes) > 12 else ''}); add images of that class to the pool")
    return PoolGenerator(plan, pool, cfg.seed, name, pc.shift, pc.split, pc.match_groups,
                         cfg.resolution, cfg.resize_filter, pc.replacement)
