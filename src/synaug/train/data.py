"""Fast data path: decode a manifest once to a uint8 tensor, augment whole batches on tensors.

Small images (CIFAR: 60k x 3 x 32 x 32 = 184 MB) are decoded once (threads), cached on disk
as ``.npy`` under a key hashed from the paths, mtimes and sizes, and then every batch is
cropped / flipped / normalised as one tensor operation. Large images go through a
``DataLoader`` whose workers decode and transform each sample (torchvision.transforms.v2).

Leakage guard: :func:`refuse_test_rows` is called by every loader built for training,
fine-tuning or model selection; a manifest with ``split == "test"`` rows is refused there.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SynaugError
from ..io import atomic_path
from ..manifest import Manifest
from .config import AugmentConfig, DataConfig

#: purposes that must never see test rows
GUARDED = ("training", "fine-tuning", "model selection")
_CACHE_VERSION = 1


def refuse_test_rows(manifest: Manifest, purpose: str) -> None:
    """Raise :class:`SynaugError` if ``manifest`` holds any ``split == "test"`` row.

    Called for every data set used for training, fine-tuning or model selection: the test
    split is touched once, by the final evaluation.
    """
    n = int((manifest.df["split"] == "test").sum())
    if n:
        raise SynaugError(f"refusing {n} test-split row(s) for {purpose}: the test split is only "
                          f"for the final evaluation")


def default_cache_dir() -> Path:
    from ..data.shared import cache_dir

    return cache_dir() / "tensors"


# ------------------------------------------------------------------ decoding + cache
def _load_rgb(path: Path, size: Optional[int]) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR, reducing_gap=None)
            return np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise SynaugError(f"image file not found: {path}") from None
    except Exception as e:
        raise SynaugError(f"unreadable image {path}: {type(e).__name__}: {e}") from None


def cache_key(paths: list[Path], size: Optional[int]) -> str:
    """sha256 over (path, mtime_ns, size in bytes) of every file plus the target size."""
    h = hashlib.sha256(json.dumps({"v": _CACHE_VERSION, "size": size}).encode())
    for p in paths:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise SynaugError(f"image file not found: {p}") from None
        h.update(f"{os.path.abspath(p)}\0{st.st_mtime_ns}\0{st.st_size}\n".encode())
    return h.hexdigest()[:32]


def decode_manifest(manifest: Manifest, image_size: Optional[int] = None, cache_dir: Optional[Path] = None,
                    num_threads: int = 2, use_cache: bool = True) -> torch.Tensor:
    """All images of ``manifest`` as one ``uint8`` tensor ``(N, 3, H, W)``, in row order.

    Parameters
    ----------
    manifest : Manifest
    image_size : int, optional
        Resize every image to ``image_size`` x ``image_size``; required when sizes differ.
    cache_dir : path, optional
        Where the decoded array is cached (``<key>.npy``, written atomically).
    num_threads : int
        Decoding threads (PIL releases the GIL while decoding).
    use_cache : bool
        Read / write the on-disk cache.
    """
    paths = manifest.abspaths()
    if not paths:
        raise SynaugError("no images to decode")
    cache_file = None
    if use_cache:
        cache_file = Path(cache_dir or default_cache_dir()) / f"{cache_key(paths, image_size)}.npy"
        if cache_file.is_file():
            try:
                arr = np.load(cache_file)
                if arr.shape[0] == len(paths) and arr.dtype == np.uint8:
                    return torch.from_numpy(arr)
            except (OSError, ValueError):
                pass  # a damaged cache file is rebuilt below
    with ThreadPoolExecutor(max(1, num_threads)) as pool:
        imgs = list(pool.map(lambda p: _load_rgb(p, image_size), paths, chunksize=64))
    shapes = {im.shape for im in imgs}
    if len(shapes) > 1:
        raise SynaugError(f"images have {len(shapes)} different sizes (e.g. {sorted(shapes)[:2]}); "
                          f"set data.image_size to resize them (train.data.image_size in a run config)")
    arr = np.ascontiguousarray(np.stack(imgs).transpose(0, 3, 1, 2))
    if cache_file is not None:
        with atomic_path(cache_file) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, arr)
    return torch.from_numpy(arr)


# ------------------------------------------------------------------ batched augmentation
def crop_flip(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop after zero padding + random horizontal flip of a whole batch, in one gather.

    Same distribution as ``RandomCrop(H, padding)`` + ``RandomHorizontalFlip()`` applied per
    image: offsets are uniform in ``[0, 2 * padding]``, each image flipped with p = 0.5.
    """
    B = x.shape[0]
    if padding <= 0 and not flip:
        return x
    oy = torch.randint(0, 2 * padding + 1, (B,), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (B,), generator=generator)
    flipped = torch.rand(B, generator=generator) < 0.5 if flip else torch.zeros(B, dtype=torch.bool)
    return crop_flip_at(x, oy.to(x.device), ox.to(x.device), flipped.to(x.device), padding)


def crop_flip_at(x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flipped: torch.Tensor,
                 padding: int) -> torch.Tensor:
    """Crop ``x`` (zero-padded by ``padding``) at offsets ``(oy, ox)`` and flip the rows where
    ``flipped``: one gather, no host synchronisation (offsets and flags are tensors on ``x``'s
    device), so it can run inside a compiled or CUDA-graphed training step."""
    B, C, H, W = x.shape
    dev = x.device
    if padding > 0:
        x = F.pad(x, (padding, padding, padding, padding))
    rows = oy[:, None] + torch.arange(H, device=dev)
    cols = ox[:, None] + torch.arange(W, device=dev)
    cols = torch.where(flipped[:, None], cols.flip(1), cols)
    b = torch.arange(B, device=dev)[:, None, None, None]
    c = torch.arange(C, device=dev)[None, :, None, None]
    return x[b, c, rows[:, None, :, None], cols[:, None, None, :]]


class Normalizer:
    """uint8 batch -> normalised float batch, one fused multiply-add."""

    def __init__(self, mean, std, device, channels_last: bool):
        mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.scale = 1.0 / (255.0 * std)
        self.shift = -mean / std
        self.channels_last = channels_last

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.addcmul(self.shift, x.to(torch.float32), self.scale)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


# ------------------------------------------------------------------ image sets
@dataclass
class Batch:
    x: torch.Tensor       # float, normalised, on the device
    y: torch.Tensor       # long labels
    g: torch.Tensor       # long group ids (-1 none)
    index: torch.Tensor   # row numbers in the manifest


class ImageSet:
    """The images, labels and groups of a manifest, ready to be served in batches.

    Parameters
    ----------
    manifest : Manifest
    data : DataConfig
    purpose : str
        "training", "fine-tuning", "model selection" (test rows refused) or "evaluation".
    device : torch.device
    channels_last : bool
    """

    def __init__(self, manifest: Manifest, data: DataConfig, purpose: str, device: torch.device,
                 channels_last: bool = True, mean=None, std=None):
        if purpose in GUARDED:
            refuse_test_rows(manifest, purpose)
        if len(manifest) == 0:
            raise SynaugError(f"no rows for {purpose}")
        self.manifest = manifest
        self.data = data
        self.device = device
        self.labels = torch.tensor(manifest.df["label"].to_numpy(dtype=np.int64, copy=True))
        self.groups = torch.tensor(manifest.df["group"].to_numpy(dtype=np.int64, copy=True))
        self.synthetic = torch.tensor((manifest.df["source"] == "synthetic").to_numpy(), dtype=torch.float32)
        self.mode = self._choose_mode()
        aug = AugmentConfig()
        self.norm = Normalizer(mean or aug.mean, std or aug.std, device, channels_last)
        self.images: Optional[torch.Tensor] = None
        if self.mode == "memory":
            cache = Path(data.cache_dir) if data.cache_dir else None
            imgs = decode_manifest(manifest, data.image_size, cache, num_threads=max(1, data.num_workers))
            # uint8 on the device: 4x smaller than float, augmentation runs where the model runs
            self.images = imgs.to(device) if device.type != "cpu" else imgs

    def __len__(self) -> int:
        return len(self.labels)

    def _choose_mode(self) -> str:
        if self.data.mode != "auto":
            return self.data.mode
        if self.data.eval_resize is not None:
            return "stream"  # resize + centre crop at evaluation happen per image
        side = self.data.image_size
        if side is None:
            from PIL import Image

            with Image.open(self.manifest.abspaths()[0]) as im:
                side = max(im.size)
        est_mb = len(self.manifest) * 3 * side * side / 2**20
        return "memory" if est_mb <= self.data.memory_limit_mb else "stream"

    # --------------------------------------------------------------- batches
    def batches(self, order: torch.Tensor, batch_size: int, augment: Optional[AugmentConfig],
                generator: torch.Generator, rank: int = 0, world: int = 1) -> Iterator[Batch]:
        """Serve ``order`` (row numbers) in batches of ``batch_size`` (global over ranks).

        With ``world > 1`` each rank gets rows ``rank::world`` of every global batch; a final
        batch smaller than ``world`` is dropped so that every rank takes the same steps.
        """
        chunks = split_batches(order, batch_size, rank, world)
        if self.mode == "memory":
            yield from self._memory_batches(chunks, augment, generator)
        else:
            yield from self._stream_batches(chunks, augment, generator)

    def _memory_batches(self, chunks, augment, generator) -> Iterator[Batch]:
        if augment is not None and augment.random_resized_crop:
            raise SynaugError("augment.random_resized_crop needs the streaming path (set data.mode: stream)")
        for idx in chunks:
            x = self.images[idx.to(self.images.device)]
            if augment is not None:
                x = crop_flip(x, augment.crop_padding, augment.flip, generator)
            yield self._finish(x, idx)

    def _finish(self, x: torch.Tensor, idx: torch.Tensor) -> Batch:
        x = self.norm(x.to(self.device, non_blocking=True))
        return Batch(x, self.labels[idx].to(self.device), self.groups[idx].to(self.device), idx)

    def stream_batches(self, chunks: list[torch.Tensor], augment: Optional[AugmentConfig],
                       generator: torch.Generator) -> Iterator[Batch]:
        """Decode + transform ``chunks`` (row numbers per batch) in DataLoader workers."""
        return self._stream_batches(chunks, augment, generator)

    def on_device(self, which: str) -> torch.Tensor:
        """``labels`` or ``groups`` as a tensor on the training device (made once)."""
        key = f"_{which}_dev"
        if getattr(self, key, None) is None:
            setattr(self, key, getattr(self, which).to(self.device))
        return getattr(self, key)

    @property
    def image_hw(self) -> tuple[int, int]:
        """Height and width of the images served (after ``data.image_size``)."""
        if self.images is not None:
            return int(self.images.shape[-2]), int(self.images.shape[-1])
        if self.data.image_size is not None:
            return self.data.image_size, self.data.image_size
        from PIL import Image

        with Image.open(self.manifest.abspaths()[0]) as im:
            return im.size[1], im.size[0]

    def _stream_batches(self, chunks, augment, generator) -> Iterator[Batch]:
        from torch.utils.data import DataLoader

        ds = _StreamDataset(self.manifest.abspaths(), self.data.image_size, augment, self.data.eval_resize)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        loader = DataLoader(ds, batch_sampler=[c.tolist() for c in chunks],
                            num_workers=self.data.num_workers, collate_fn=_collate,
                            generator=torch.Generator().manual_seed(seed),
                            persistent_workers=False, pin_memory=self.device.type == "cuda")
        for x, idx in loader:
            yield self._finish(x, idx)


class _StreamDataset(torch.utils.data.Dataset):
    """Per-sample decode + transforms in DataLoader workers (large images).

    Geometric transforms run on the decoded PIL image, as torchvision's PIL transforms do in
    the reference code bases; the result becomes a uint8 tensor. Evaluation (``augment`` None):
    ``Resize((eval_resize, eval_resize))`` then ``CenterCrop(size)`` when ``eval_resize`` is set
    (DFR ``wb_data.py:get_transform_cub``, ``train=False``), else a resize to ``size``.
    Training: ``RandomResizedCrop(size, rrc_scale, rrc_ratio)`` + flip when
    ``augment.random_resized_crop`` (``get_transform_cub``, ``train=True``), else resize,
    random crop after ``crop_padding`` zero padding, flip.
    """

    def __init__(self, paths, size, augment: Optional[AugmentConfig], eval_resize: Optional[int] = None):
        self.paths, self.size, self.augment, self.eval_resize = paths, size, augment, eval_resize
        self._tf = None

    def _transform(self):
        return stream_transform(self.size, self.augment, self.eval_resize)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        if self._tf is None:
            self._tf = self._transform()
        try:
            with Image.open(self.paths[i]) as im:
                img = im.convert("RGB")
        except FileNotFoundError:
            raise SynaugError(f"image file not found: {self.paths[i]}") from None
        return self._tf(img), i


def stream_transform(size: Optional[int], augment: Optional[AugmentConfig], eval_resize: Optional[int] = None):
    """PIL image -> uint8 ``(3, H, W)`` tensor: the streaming path's transform (see
    :class:`_StreamDataset`)."""
    from torchvision.transforms import v2

    a = augment
    pil: list = []   # on the PIL image
    ten: list = []   # on the uint8 tensor
    if a is None:
        if eval_resize is not None:
            if size is None:
                raise SynaugError("data.eval_resize needs data.image_size")
            pil += [v2.Resize((eval_resize, eval_resize)), v2.CenterCrop(size)]
        elif size is not None:
            pil.append(v2.Resize((size, size)))
    elif a.random_resized_crop:
        if size is None:
            raise SynaugError("augment.random_resized_crop needs data.image_size")
        pil.append(v2.RandomResizedCrop(size, scale=tuple(a.rrc_scale), ratio=tuple(a.rrc_ratio)))
        if a.flip:
            pil.append(v2.RandomHorizontalFlip())
    else:
        if size is not None:
            pil.append(v2.Resize((size, size)))
        if a.crop_padding > 0:
            ten.append(v2.RandomCrop(size, padding=a.crop_padding) if size else _SelfSizedCrop(a.crop_padding))
        if a.flip:
            ten.append(v2.RandomHorizontalFlip())
    return v2.Compose([*pil, v2.PILToTensor(), *ten])


class _SelfSizedCrop(torch.nn.Module):
    def __init__(self, padding: int):
        super().__init__()
        self.padding = padding

    def forward(self, img):
        from torchvision.transforms import v2

        return v2.RandomCrop(img.shape[-2:], padding=self.padding)(img)


def _collate(items):
    if len({x.shape for x, _ in items}) > 1:
        raise SynaugError("images in a batch have different sizes; set data.image_size (train.data.image_size in a run config)")
    return torch.stack([x for x, _ in items]), torch.tensor([i for _, i in items], dtype=torch.long)


# ------------------------------------------------------------------ orders
def split_batches(order: torch.Tensor, batch_size: int, rank: int = 0, world: int = 1) -> list[torch.Tensor]:
    """``order`` cut into global batches of ``batch_size``; each rank keeps rows ``rank::world``
    of every batch, and a final batch smaller than ``world`` is dropped (every rank takes the
    same number of steps)."""
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [c[rank::world] for c in chunks if len(c) >= world]


def epoch_order(n: int, generator: torch.Generator, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A shuffled order of ``n`` rows, or ``n`` draws with replacement ∝ ``weights`` (re-sampling)."""
    if weights is None:
        return torch.randperm(n, generator=generator)
    return torch.multinomial(weights.double(), n, replacement=True, generator=generator)
