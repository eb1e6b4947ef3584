"""The generator interface and what every backend shares: work items, seeds, image output."""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Protocol, Sequence

from PIL import Image

from ..plan import Cell, Plan

_FILTERS = {"lanczos": Image.Resampling.LANCZOS, "bicubic": Image.Resampling.BICUBIC,
            "box": Image.Resampling.BOX}


def derive_seed(run_seed: int, cell_key: str, index: int, purpose: str = "image", attempt: int = 0) -> int:
    """A 63-bit seed that depends only on (run seed, cell, index, purpose, attempt).

    Hashing (not a running RNG) makes an image's seed independent of batch size, worker
    count and of which other images were already made, which is what resume and sharding need.
    """
    text = f"synaug-v1|{int(run_seed)}|{cell_key}|{int(index)}|{purpose}|{int(attempt)}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


RANDOM_PREFIX = "random:"  # model: random:<arch> = a pipeline with random weights (cost only)


def random_weights(generator: str | None) -> bool:
    """Whether a ``model`` value or a manifest ``generator`` label (``txt2img:random:tiny``)
    names a pipeline with random weights."""
    return bool(generator) and (generator.startswith(RANDOM_PREFIX) or f":{RANDOM_PREFIX}" in generator)


def random_weights_note(generator: str | None) -> str | None:
    """The warning every terminal line and report gives for such images (None otherwise)."""
    if not random_weights(generator):
        return None
    return (f"the synthetic images come from a generator with random weights ({generator}): they are noise, "
            "not meaningful images; use it to measure cost or test the pipeline, never for results")


def cell_dirname(cell: Cell) -> str:
    """Folder of a cell's images under ``images/``: the cell key with ``/`` replaced by ``_``."""
    return cell.key.replace("/", "_")


@dataclass(frozen=True)
class Item:
    """One planned image: the ``index``-th synthetic image of ``cell``.

    ``order`` is its position in the whole plan (cells in plan order, then index); sharding
    gives rank ``r`` the items with ``order % world_size == r``.
    """

    order: int
    cell: Cell
    index: int
    seed: int
    prompt: str

    @property
    def path(self) -> str:
        return f"images/{cell_dirname(self.cell)}/{self.index:06d}.png"


def plan_items(plan: Plan, prompt_fn, run_seed: int) -> list[Item]:
    """All planned images in plan order, with their seeds and prompts."""
    items, order = [], 0
    for cell in plan.cells:
        for i in range(cell.synthetic):
            seed = derive_seed(run_seed, cell.key, i)
            items.append(Item(order, cell, i, seed, prompt_fn(cell, seed)))
            order += 1
    return items


class Generator(Protocol):
    """A backend. ``name`` is recorded in the manifest's ``generator`` column.

    A backend may also define ``provenance(item) -> {"generator": str, "source_file": str}``
    to record, per image, who made it and which file it came from (the pool backend does).
    """

    name: str

    def generate(self, items: Sequence[Item], seeds: Sequence[int]) -> list[Image.Image]:
        """One RGB image per item, made from ``seeds[i]`` (the item's seed or a retry seed)."""
        ...


def to_square(img: Image.Image, size: int, filter: str = "lanczos") -> Image.Image:
    """RGB ``size`` x ``size``: centre-crop to a square, then resize with an anti-aliasing filter.

    PIL's LANCZOS/BOX resize integrates over the whole source footprint, so a 512 -> 32
    reduction does not alias (unlike plain strided sampling).
    """
    img = img.convert("RGB")
    w, h = img.size
    if w != h:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
    if img.size != (size, size):
        img = img.resize((size, size), _FILTERS[filter])
    return img


def png_bytes(img: Image.Image) -> bytes:
    """Deterministic PNG encoding (no metadata, fixed compression)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()
