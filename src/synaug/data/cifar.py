"""CIFAR-10/100 from the standard python-format archives a user has on disk.

``cifar-10-python.tar.gz`` (``cifar-10-batches-py/data_batch_1..5``, ``test_batch``,
``batches.meta``) and ``cifar-100-python.tar.gz`` (``cifar-100-python/train``, ``test``,
``meta``) hold pickled dicts of numpy arrays. They are read with a restricted unpickler (only
numpy arrays and plain containers, so a malicious archive cannot run code), decoded to PNGs
once into a cache folder (temp folder + rename, so an interrupted run leaves nothing half
made) and listed in a manifest whose rows keep the archive order - then
:func:`~synaug.data.make_long_tail` with seed 0 picks exactly the images LDAM-DRW's
``IMBALANCECIFAR`` picks.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import SynaugError
from ..manifest import Manifest
from .registry import register_dataset
from .shared import cache_dir


@dataclass(frozen=True)
class CifarSpec:
    name: str             # dataset / cache name
    archive: str          # archive file name
    folder: str           # top folder inside the archive
    train: tuple          # train pickle names, in order
    test: tuple
    meta: str
    label_key: str        # "labels" or "fine_labels"
    names_key: str        # "label_names" or "fine_label_names"


CIFAR10 = CifarSpec("cifar10", "cifar-10-python.tar.gz", "cifar-10-batches-py",
                    tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta",
                    "labels", "label_names")
CIFAR100 = CifarSpec("cifar100", "cifar-100-python.tar.gz", "cifar-100-python", ("train",), ("test",),
                     "meta", "fine_labels", "fine_label_names")

# ---------------------------------------------------------------------------- safe unpickling
_NUMPY_GLOBALS = {
    # numpy 1.x pickles name numpy.core, numpy 2.x numpy._core; both resolve to the 2.x home
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("_codecs", "encode"): ("_codecs", "encode"),  # how protocol-2 pickles carry bytes
}
_SAFE_BUILTINS = {"list", "dict", "tuple", "set", "frozenset", "bytes", "bytearray", "str", "int",
                  "float", "complex", "bool"}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only numpy array reconstruction and plain builtin containers."""

    def find_class(self, module: str, name: str):
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            import builtins

            return getattr(builtins, name)
        target = _NUMPY_GLOBALS.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        import importlib

        return getattr(importlib.import_module(target[0]), target[1])


def safe_unpickle(data: bytes, what: str = "pickle") -> dict:
    """Unpickle a CIFAR batch (``encoding="latin1"``) allowing only numpy arrays and containers.

    Keys are returned as ``str`` whether the pickle stored them as Python 2 ``str`` or bytes.
    """
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # UnpicklingError, EOFError, ValueError... all mean a bad file
        raise SynaugError(f"cannot read {what}: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise SynaugError(f"{what} does not hold a dict")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


# ---------------------------------------------------------------------------- locating the data
def _locate(spec: CifarSpec, root: str | Path | None) -> tuple[Callable[[str], bytes], str]:
    """Return ``(read(member_name) -> bytes, cache_key)`` for an archive or extracted folder.

    ``root`` may be the ``.tar.gz`` itself, a folder holding it, the extracted top folder, or
    a folder holding that.
    """
    if root is None:
        raise SynaugError(f"{spec.name} needs --data-root (the folder with {spec.archive})")
    root = Path(root)
    candidates = [root, root / spec.archive]
    archive = next((c for c in candidates if c.is_file()), None)
    if archive is not None:
        st = archive.stat()
        key = _key(str(archive.resolve()), st.st_size, st.st_mtime_ns)

        wanted = {f"{spec.folder}/{n}" for n in (*spec.train, *spec.test, spec.meta)}
        members: dict[str, bytes] = {}

        def read_tar(member: str) -> bytes:
            if not members:  # one pass over the (gzip) archive reads every pickle
                try:
                    with tarfile.open(archive, "r:*") as tf:
                        for info in tf:
                            if info.name in wanted and info.isfile():
                                members[info.name] = tf.extractfile(info).read()
                except (tarfile.TarError, OSError, EOFError) as e:
                    raise SynaugError(f"cannot read archive {archive}: {type(e).__name__}: {e}") from None
            name = f"{spec.folder}/{member}"
            if name not in members:
                raise SynaugError(f"{archive} has no member {name}")
            return members[name]

        return read_tar, key
    for folder in (root, root / spec.folder):
        if (folder / spec.meta).is_file():
            stats = [(n, (folder / n).stat().st_size, (folder / n).stat().st_mtime_ns)
                     for n in (*spec.train, *spec.test, spec.meta) if (folder / n).is_file()]
            key = _key(str(folder.resolve()), *stats)

            def read_dir(member: str, folder: Path = folder) -> bytes:
                p = folder / member
                if not p.is_file():
                    raise SynaugError(f"missing {p}")
                return p.read_bytes()

            return read_dir, key
    raise SynaugError(f"{spec.name}: found neither {spec.archive} nor {spec.folder}/ under {root}")


def _key(*parts) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _load_split(spec: CifarSpec, read, members: tuple, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for member in members:
        d = safe_unpickle(read(member), f"{spec.name} {member}")
        if "data" not in d or spec.label_key not in d:
            raise SynaugError(f"{spec.name} {member} lacks 'data' or {spec.label_key!r}")
        data = np.asarray(d["data"])
        lab = np.asarray(d[spec.label_key], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(lab) != len(data):
            raise SynaugError(f"{spec.name} {member}: expected uint8 data of shape (N, 3072) and N labels, "
                              f"got {data.dtype} {data.shape} and {len(lab)} labels")
        if len(lab) and (lab.min() < 0 or lab.max() >= num_classes):
            raise SynaugError(f"{spec.name} {member}: label out of range [0, {num_classes})")
        # rows are channel-planar R, G, B of 32x32
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(lab)
    return np.concatenate(images), np.concatenate(labels)


def _folder_name(name: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip(".")
    return safe or "class"


def build_cifar(spec: CifarSpec, root: str | Path | None, cache: str | Path | None = None) -> Manifest:
    """Decode the archive at ``root`` into ``cache/<name>-<key>/`` once and return its manifest.

    Paths are ``{train,test}/<class>/<index>.png`` with ``index`` the position in the archive's
    split; rows keep the archive order (train first).
    """
    read, key = _locate(spec, root)
    out = (Path(cache) if cache else cache_dir()) / f"{spec.name}-{key}"
    manifest_file = out / "manifest.parquet"
    if (out / ".complete").is_file() and manifest_file.is_file():
        return Manifest.read(manifest_file)

    meta = safe_unpickle(read(spec.meta), f"{spec.name} {spec.meta}")
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get(spec.names_key, [])]
    if not classes:
        raise SynaugError(f"{spec.name} {spec.meta} lacks {spec.names_key!r}")
    if len({_folder_name(c) for c in classes}) != len(classes):
        raise SynaugError(f"{spec.name}: class names are not unique as folder names")
    from PIL import Image
    from tqdm import tqdm

    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        rows = []
        for split, members in (("train", spec.train), ("test", spec.test)):
            images, labels = _load_split(spec, read, members, len(classes))
            for c in classes:
                (tmp / split / _folder_name(c)).mkdir(parents=True, exist_ok=True)
            width = max(5, len(str(len(images))))
            for i in tqdm(range(len(images)), desc=f"{spec.name} {split} -> png", unit="img",
                          leave=False, mininterval=1.0):
                rel = f"{split}/{_folder_name(classes[labels[i]])}/{i:0{width}d}.png"
                Image.fromarray(images[i], "RGB").save(tmp / rel, compress_level=1)
                rows.append({"path": rel, "label": int(labels[i]), "split": split})
        m = Manifest.from_records(rows, classes, {"real": tmp})
        m.write(tmp / "manifest.parquet")
        (tmp / ".complete").write_text("ok\n")
        if not (out / ".complete").is_file():  # else a concurrent run finished first: keep its copy
            shutil.rmtree(out, ignore_errors=True)
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Manifest.read(manifest_file)


@register_dataset("cifar10")
def cifar10(root: str | Path | None = None, cache: str | Path | None = None) -> Manifest:
    """CIFAR-10 (50,000 train / 10,000 test) from ``cifar-10-python.tar.gz`` under ``root``."""
    return build_cifar(CIFAR10, root, cache)


@register_dataset("cifar100")
def cifar100(root: str | Path | None = None, cache: str | Path | None = None) -> Manifest:
    """CIFAR-100 (fine labels) from ``cifar-100-python.tar.gz`` under ``root``."""
    return build_cifar(CIFAR100, root, cache)
