"""The real CIFAR-10 JPEGs shipped in ``../shared/data/cifar10`` (``train.tar``, ``test.tar``).

The archives are extracted once into a cache folder (never into the shared folder); the
extraction is atomic, so an interrupted first run re-extracts instead of using half a tree.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tarfile
from pathlib import Path

from ..errors import SynaugError
from ..manifest import Manifest
from .registry import register_dataset

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SHA256 = {"train.tar": "d1ef8a2bb103ef3b931db02af8666e42d690b7b7801563cce0338ce8f1831380",
          "test.tar": "fc14ad50169ff00c376334ff4982490d496134f0cf19b2eeff1ac16521100c3b"}


def default_shared_root() -> Path:
    """``$SYNAUG_SHARED_DATA`` or the ``shared/data`` folder beside (or above) the checkout."""
    env = os.environ.get("SYNAUG_SHARED_DATA")
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    checkout = Path(__file__).resolve().parents[3]  # src/synaug/data/shared.py -> repo root
    bases = [here, *here.parents, checkout, *checkout.parents]
    cands = [c for b in bases for c in (b / "shared" / "data", b.parent / "shared" / "data")]
    # the workplace's fixed location, for checkouts cloned elsewhere (CI clones to a temp dir)
    cands.append(Path("/work/shared/data"))
    for cand in cands:
        if (cand / "cifar10").is_dir():
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


def extract_shared_cifar10(shared_root: str | Path | None = None, cache: str | Path | None = None,
                           check_sha: bool = True) -> Path:
    """Extract ``train.tar``/``test.tar`` into ``cache/cifar10-jpeg`` once; return that folder."""
    src = Path(shared_root) if shared_root else default_shared_root()
    src = src / "cifar10" if (src / "cifar10").is_dir() else src
    out = Path(cache) if cache else cache_dir() / "cifar10-jpeg"
    if (out / ".complete").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # several processes (parallel tests, DDP ranks) may arrive at once: one extracts
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / ".complete").is_file():
            return out
        return _extract(src, out, check_sha)


def _extract(src: Path, out: Path, check_sha: bool) -> Path:
    for name in ("train.tar", "test.tar"):
        if not (src / name).is_file():
            raise SynaugError(f"shared CIFAR-10 archive not found: {src / name} "
                              f"(set SYNAUG_SHARED_DATA or pass --data-root)")
        if check_sha and _sha256(src / name) != SHA256[name]:
            raise SynaugError(f"checksum mismatch for {src / name}")
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("train.tar", "test.tar"):
        with tarfile.open(src / name) as tf:
            members = []
            for m in tf.getmembers():
                # archive safety: only plain files and folders under train/ or test/
                if not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in Path(m.name).parts:
                    raise SynaugError(f"unsafe member {m.name!r} in {src / name}")
                members.append(m)
            tf.extractall(tmp, members=members, filter="data")
    (tmp / ".complete").write_text("ok\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


@register_dataset("shared-cifar10")
def shared_cifar10(root: str | Path | None = None, cache: str | Path | None = None) -> Manifest:
    """Balanced CIFAR-10 (train 5,000/class, test 1,000/class) from the shared JPEG archives.

    Rows are sorted by class then file name, so the long-tail draw is reproducible.
    """
    folder = extract_shared_cifar10(root, cache)
    rows = []
    for split in ("train", "test"):
        for label, cls in enumerate(CIFAR10_CLASSES):
            d = folder / split / cls
            if not d.is_dir():
                raise SynaugError(f"missing folder {d} in the extracted archive")
            for f in sorted(os.listdir(d)):
                if f.endswith(".jpg"):
                    rows.append({"path": f"{split}/{cls}/{f}", "label": label, "split": split})
    return Manifest.from_records(rows, CIFAR10_CLASSES, {"real": folder})
