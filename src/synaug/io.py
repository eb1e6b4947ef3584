"""Atomic file writes: a crash never leaves a half-written file under its final name."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path in the same folder; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600 (and some writers recreate the file): finished files follow the umask
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):  # the writer rarely says which file it was
            from .errors import SynaugError

            raise SynaugError(f"no space left on the device (or quota exceeded) while writing {path}") from None
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def remove_temps(folder: str | os.PathLike, pattern: str = ".*.tmp", owned=None) -> None:
    """Delete the temp files (``pattern``; :func:`atomic_path` names them ``.<name>.<random>.tmp``)
    that a process killed inside an atomic write left in ``folder``; ``owned(name)`` limits it to
    the caller's own files where another process may still be writing beside it."""
    import shutil

    folder = Path(folder)
    if not folder.is_dir():
        return
    for t in folder.glob(pattern):
        if owned is None or owned(t.name):
            shutil.rmtree(t, ignore_errors=True) if t.is_dir() else t.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically; ``durable`` also fsyncs it (a caller writing many
    files may instead flush them all at once: :func:`flush_to_disk`)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())


def flush_to_disk() -> None:
    """Everything written so far reaches the disk (one ``sync``; where there is none, nothing)."""
    if hasattr(os, "sync"):
        os.sync()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def check_writable(folder: str | os.PathLike, what: str = "output folder", create: bool = False) -> bool:
    """Make sure files can be written in ``folder`` (``create``: make it, with parents).

    Without ``create`` nothing is left behind: the test file goes into ``folder`` or, when it
    does not exist yet, into its nearest existing parent. Returns True when this call created
    the folder. Raises ``SynaugError`` (one line) for a read-only, unwritable or non-folder
    path before any stage writes half of its output (some writers, e.g. pyarrow and
    safetensors, raise errors that do not say which file).
    """
    from .errors import SynaugError

    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise SynaugError(f"{what} {path} exists and is not a folder")
    created = False
    probe = path
    try:
        if create and not path.exists():
            path.mkdir(parents=True)
            created = True
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise SynaugError(f"{what} {path}: {probe} is not a folder")
        fd, tmp = tempfile.mkstemp(prefix=".synaug-write-check.", suffix=".tmp", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        if created:
            with contextlib.suppress(OSError):
                path.rmdir()
        raise SynaugError(f"cannot write to {what} {path}: {e.strerror or e}") from None
    return created
