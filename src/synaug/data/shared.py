"""The real data shipped in ``../shared/data`` (see its README): archives extracted once into a cache.

* ``shared-cifar10``: real CIFAR-10 JPEGs (``cifar10/train.tar``, ``cifar10/test.tar``);
* ``shared-sd14``: 49,080 images made by Stable Diffusion 1.4 for the CIFAR-10 classes
  (the generated half of CIFAKE, ``cifake/sd14.tar``), as a synthetic-only manifest;
* ``shared-utkface``: UTKFace, aligned and cropped (``utkface/UTKFace.tar``): 22,010 usable
  faces (gender = class, race = group, race 4 and 5 malformed names dropped).

Each archive is sha256-checked, then extracted once into the cache folder (never into the
shared folder); extraction goes to a temp folder renamed at the end, under a file lock, so an
interrupted or concurrent first run never leaves or reads half a tree.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import SynaugError
from ..manifest import Manifest
from .registry import register_dataset

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
#: recorded in the ``generator`` column of every ``shared-sd14`` row (prompts and seeds are unknown)
SD14_GENERATOR = "Stable Diffusion 1.4 (CIFAKE)"


@dataclass(frozen=True)
class SharedArchive:
    """Tar files in ``<shared data>/<folder>/`` and the cache folder they are extracted to."""

    folder: str
    sha256: dict[str, str]   # tar file name -> sha256
    cache_name: str


ARCHIVES = {
    "cifar10": SharedArchive("cifar10", {
        "train.tar": "d1ef8a2bb103ef3b931db02af8666e42d690b7b7801563cce0338ce8f1831380",
        "test.tar": "fc14ad50169ff00c376334ff4982490d496134f0cf19b2eeff1ac16521100c3b"}, "cifar10-jpeg"),
    "sd14": SharedArchive("cifake", {
        "sd14.tar": "f8e4d651caa18af6520e3bda46dc3b04fa79763cdf0a2066312eacfe856e42f0"}, "cifake-sd14"),
    "utkface": SharedArchive("utkface", {
        "UTKFace.tar": "9590c8e45d92d0e2b370df376533cdad0491cf38e97a50b514f7bc16a50bb74e"}, "utkface"),
}


def default_shared_root() -> Path:
    """``$SYNAUG_SHARED_DATA``, else the first ``shared/data`` beside or above the working
    directory or the checkout (``../shared/data`` for a checkout next to it)."""
    env = os.environ.get("SYNAUG_SHARED_DATA")
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    checkout = Path(__file__).resolve().parents[3]  # src/synaug/data/shared.py -> repo root
    bases = [here, *here.parents, checkout, *checkout.parents]
    for b in bases:
        for cand in (b / "shared" / "data", b.parent / "shared" / "data"):
            if any((cand / a.folder).is_dir() for a in ARCHIVES.values()):
                return cand
    return Path("../shared/data")


def cache_dir() -> Path:
    return Path(os.environ.get("SYNAUG_CACHE", Path.home() / ".cache" / "synaug"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def extract_shared(name: str, shared_root: str | Path | None = None, cache: str | Path | None = None,
                   check_sha: bool = True) -> Path:
    """Extract the shared archive ``name`` (a key of :data:`ARCHIVES`) once; return the folder.

    Parameters
    ----------
    shared_root : path, optional
        The shared data folder (holding ``cifar10/``, ``cifake/``, ...) or the archive's own
        folder; default :func:`default_shared_root`.
    cache : path, optional
        Extraction folder; default ``$SYNAUG_CACHE/<cache name>`` (``~/.cache/synaug``).
    check_sha : bool
        Refuse an archive whose sha256 differs from the one the shared README gives.
    """
    spec = ARCHIVES[name]
    src = Path(shared_root) if shared_root else default_shared_root()
    src = src / spec.folder if (src / spec.folder).is_dir() else src
    out = Path(cache) if cache else cache_dir() / spec.cache_name
    if (out / ".complete").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # several processes (parallel tests, DDP ranks) may arrive at once: one extracts
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / ".complete").is_file():
            return out
        return _extract(spec, src, out, check_sha)


def _extract(spec: SharedArchive, src: Path, out: Path, check_sha: bool) -> Path:
    for tar_name, sha in spec.sha256.items():
        if not (src / tar_name).is_file():
            raise SynaugError(f"shared archive not found: {src / tar_name} "
                              f"(set SYNAUG_SHARED_DATA or pass --data-root)")
        if check_sha and _sha256(src / tar_name) != sha:
            raise SynaugError(f"checksum mismatch for {src / tar_name} (expected sha256 {sha[:12]}...)")
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for tar_name in spec.sha256:
        with tarfile.open(src / tar_name) as tf:
            members = []
            for m in tf.getmembers():
                # archive safety: only plain files and folders, no absolute or parent paths
                if not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in Path(m.name).parts:
                    raise SynaugError(f"unsafe member {m.name!r} in {src / tar_name}")
                members.append(m)
            tf.extractall(tmp, members=members, filter="data")
    (tmp / ".complete").write_text("ok\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def extract_shared_cifar10(shared_root: str | Path | None = None, cache: str | Path | None = None,
                           check_sha: bool = True) -> Path:
    """Extract ``cifar10/train.tar`` and ``test.tar`` once; return that folder."""
    return extract_shared("cifar10", shared_root, cache, check_sha)


def _class_rows(folder: Path, top: str, classes: list[str], split: str, **fields) -> list[dict]:
    """One row per ``.jpg`` in ``folder/top/<class>/``, classes in label order, files sorted."""
    rows = []
    for label, cls in enumerate(classes):
        d = folder / top / cls
        if not d.is_dir():
            raise SynaugError(f"missing folder {d} in the extracted archive")
        rows += [{"path": f"{top}/{cls}/{f}", "label": label, "split": split, **fields}
                 for f in sorted(os.listdir(d)) if f.endswith(".jpg")]
    return rows


@register_dataset("shared-cifar10")
def shared_cifar10(root: str | Path | None = None, cache: str | Path | None = None) -> Manifest:
    """Balanced CIFAR-10 (train 5,000/class, test 1,000/class) from the shared JPEG archives.

    Rows are sorted by class then file name, so the long-tail draw is reproducible.
    """
    folder = extract_shared("cifar10", root, cache)
    rows = [r for split in ("train", "test") for r in _class_rows(folder, split, CIFAR10_CLASSES, split)]
    return Manifest.from_records(rows, CIFAR10_CLASSES, {"real": folder})


@register_dataset("shared-sd14")
def shared_sd14(root: str | Path | None = None, cache: str | Path | None = None) -> Manifest:
    """The 49,080 Stable Diffusion 1.4 images of the CIFAR-10 classes (CIFAKE's generated half).

    Every row is ``source == "synthetic"``, ``split == "train"`` (there are no test rows),
    ``generator`` = :data:`SD14_GENERATOR`; classes are the CIFAR-10 names in CIFAR-10 label
    order, so the set can fill CIFAR-10(-LT) classes by name (``generate: {backend: pool,
    pool: {dataset: shared-sd14}}``). Prompts and seeds are unknown (empty / -1).
    """
    folder = extract_shared("sd14", root, cache)
    rows = _class_rows(folder, "sd14", CIFAR10_CLASSES, "train", source="synthetic", generator=SD14_GENERATOR)
    return Manifest.from_records(rows, CIFAR10_CLASSES, {"synthetic": folder})


@register_dataset("shared-utkface")
def shared_utkface(root: str | Path | None = None, cache: str | Path | None = None, split: str = "balanced",
                   test_per_cell: int | None = None, val_frac: float = 0.1, test_frac: float | None = None,
                   seed: int = 0, quiet: bool = False) -> Manifest:
    """UTKFace from the shared archive (23,707 files): 22,010 faces after dropping race 4
    ("Others", 1,692 faces) and the 5 malformed file names of the original release.

    Gender is the class (male, female), race the group (White, Black, Asian, Indian), ``age``
    an extra column. Split options as :func:`synaug.data.utkface.utkface` (default: a test set
    of 100 faces per (gender, race) cell, 10 % of the rest of every cell for validation, the
    remainder for training). Non-commercial research use only (UTKFace's licence).
    """
    from .utkface import utkface

    folder = extract_shared("utkface", root, cache)
    return utkface(folder, split=split, test_per_cell=test_per_cell, val_frac=val_frac, test_frac=test_frac,
                   seed=seed, quiet=quiet)
