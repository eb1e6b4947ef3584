"""Check image files before anything is generated or trained: each one exists, decodes and
has a size, and every problem is reported at once (the first few rows and the count).

The fast path reads a file's header and its last bytes only: PNG (IHDR size, the IEND chunk
at the end) and JPEG (SOF size, the EOI marker at the end). A file that does not end as its
format must (truncated), or of any other format, is decoded fully by PIL, which then says
what is wrong or that it is fine. Measured on the 50,000 CIFAR-10 training JPEGs:
``benchmarks/bench_filecheck.py``.
"""
from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from ..errors import SynaugError

Size = tuple[int, int]  # (width, height)

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers hold the size
_HEAD = 1 << 12       # bytes read first: a PNG's IHDR, the SOF of most JPEGs
_HEAD_MAX = 1 << 16   # a JPEG whose SOF comes later (a large EXIF block): read up to this
SHOW = 5  # problems named in the message; the rest are counted


def probe(path: str | os.PathLike) -> tuple[Size | None, str | None]:
    """``((width, height), None)`` for a usable image, ``(None, why)`` otherwise."""
    try:
        with open(path, "rb") as f:
            n = os.fstat(f.fileno()).st_size
            head = f.read(min(n, _HEAD))
            if head.startswith(b"\xff\xd8") and n > len(head) and _jpeg_size(head) is None:
                head += f.read(_HEAD_MAX - len(head))
            if n > len(head):
                f.seek(n - 16)
                tail = f.read()
            else:
                tail = head[-16:]
    except FileNotFoundError:
        return None, "file not found"
    except IsADirectoryError:
        return None, "a folder, not an image file"
    except OSError as e:
        return None, f"cannot read: {e.strerror or e}"
    if n == 0:
        return None, "empty file"
    if head.startswith(_PNG_SIG) and head[12:16] == b"IHDR" and tail.endswith(_PNG_END):
        return (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")), None
    if head.startswith(b"\xff\xd8") and tail.rstrip(b"\x00").endswith(b"\xff\xd9"):
        size = _jpeg_size(head)
        if size is not None:
            return size, None
    return _decode(path)


def _jpeg_size(b: bytes) -> Size | None:
    """(width, height) from the first start-of-frame segment in ``b`` (None if not in it)."""
    i = 2
    while i + 9 <= len(b):
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in _JPEG_SOF:
            return int.from_bytes(b[i + 7:i + 9], "big"), int.from_bytes(b[i + 5:i + 7], "big")
        i += 2 + int.from_bytes(b[i + 2:i + 4], "big")
    return None


def _decode(path) -> tuple[Size | None, str | None]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return im.size, None
    except Exception as e:  # PIL raises many types for damaged or unknown data
        first = (str(e).strip().splitlines() or [""])[0]
        return None, f"cannot decode ({type(e).__name__}: {first})" if first else f"cannot decode ({type(e).__name__})"


def probe_all(paths: Sequence[str | os.PathLike], threads: int = 1) -> list[tuple[Size | None, str | None]]:
    """:func:`probe` of every path, in order. ``threads`` > 1 overlaps file reads (a slow disk);
    on files in the page cache one thread is faster (the parsing holds the GIL)."""
    if len(paths) < 512 or threads <= 1:
        return [probe(p) for p in paths]
    with ThreadPoolExecutor(threads) as ex:
        return list(ex.map(probe, paths, chunksize=256))


def bad_files_message(bad: list[tuple[str, str]], total: int, what: str, fix: str, note: str = "") -> str:
    """One line: how many of ``total`` files ``what`` are unusable, the first few (``(where,
    why)``), ``note`` and how to go on."""
    shown = "; ".join(f"{where}: {why}" for where, why in bad[:SHOW])
    more = f"; and {len(bad) - SHOW} more" if len(bad) > SHOW else ""
    return f"{len(bad)} of {total} {what} cannot be used: {shown}{more}{note}. {fix}"


def check_manifest_images(m, what: str = "images", table: str | os.PathLike | None = None,
                          rows: Sequence[int] | None = None, threads: int = 1) -> dict[tuple[str, str], Size]:
    """Check every image of manifest ``m``; raise one :class:`SynaugError` naming the bad rows.

    Parameters
    ----------
    m : Manifest
    what : str
        How the message names the images (e.g. "images of data.manifest photos.csv").
    table : path, optional
        The file the rows were read from: rows are then named by line (CSV) or row number.
    rows : sequence of int, optional
        Each row's position in ``table`` (default: its position in ``m``).

    Returns
    -------
    dict
        ``(source, path) -> (width, height)`` of every row.
    """
    from ..manifest import row_ref

    paths = m.abspaths()
    found = probe_all(paths, threads)
    bad = []
    for i, ((size, why), rel) in enumerate(zip(found, m.df["path"])):
        if why is not None:
            where = row_ref(table, rows[i] if rows is not None else i) + " " if table is not None else ""
            bad.append((f"{where}{rel!r}", why))
    if bad:
        roots = ", ".join(str(Path(r).resolve()) for s, r in m.roots.items() if (m.df["source"] == s).any())
        raise SynaugError(bad_files_message(bad, len(paths), what, "Fix or remove them; nothing was generated "
                                            "or trained.", f" (paths relative to {roots})"))
    return {(s, p): size for s, p, (size, _) in zip(m.df["source"], m.df["path"], found)}


def size_counts(sizes: dict[tuple[str, str], Size], m) -> Counter:
    """``Counter`` of (width, height) over the rows of ``m`` (looked up in ``sizes``)."""
    return Counter(sizes[(s, p)] for s, p in zip(m.df["source"], m.df["path"]) if (s, p) in sizes)


def describe_sizes(counts: Counter, limit: int = 4) -> str:
    """``32x32 (407), 28x28 (9), 30x30 (2)``: the most frequent sizes first."""
    items = counts.most_common()
    text = ", ".join(f"{w}x{h} ({n})" for (w, h), n in items[:limit])
    return text + (f", and {len(items) - limit} more sizes" if len(items) > limit else "")
