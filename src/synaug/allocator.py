"""glibc ``malloc``: keep freed memory in the process instead of handing it back every step.

PyTorch's CPU tensors come from ``malloc``. glibc serves a block above its mmap threshold
(128 KiB, adapting up to 32 MiB) with a fresh ``mmap`` and gives free memory at the top of the
heap back to the kernel once it passes the trim threshold. A training step frees and allocates
the same activation buffers every step, so every step faults the same pages in again (the
kernel zeroes each one). Measured on a 2-core AMD EPYC (AVX2), ResNet-32, batch 128: 650,000
minor page faults per 40 steps, steps 1.13x slower and evaluation at batch 512 2x slower than
with both thresholds raised (``benchmarks/bench_allocator.py``). jemalloc / tcmalloc under
``LD_PRELOAD`` do the same; this needs no extra library.

Numerics are untouched (the same bytes, only where they live differs). The cost: memory a run
frees stays with the process, up to its peak, until the process exits.

Knob: ``SYNAUG_MALLOC`` = ``auto`` (default: tune under glibc, nothing elsewhere) or ``default``
(leave glibc as it is, e.g. to compare). The ``synaug`` CLI tunes first thing; training and
evaluation call :func:`keep_freed_memory` too, so library users get it as well. Each training
run records the state in ``summary.json`` (``cpu.malloc``).
"""
from __future__ import annotations

import ctypes
import os
from typing import Optional

from .errors import SynaugError

ENV = "SYNAUG_MALLOC"
CHOICES = ("auto", "default")
# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: blocks below this come from the heap (and are reused); glibc 2.36 accepts it, older ones
#: cap the threshold at ``_OLD_GLIBC_MAX``
MMAP_THRESHOLD = 1 << 30
#: free memory at the top of the heap is kept up to this much
TRIM_THRESHOLD = (1 << 31) - 1
#: the largest mmap threshold older glibc accepts (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
_OLD_GLIBC_MAX = 32 << 20

_state: Optional[dict] = None


def _libc():
    """glibc's C library, or ``None`` (musl, macOS, Windows: no ``mallopt`` to call)."""
    try:
        lib = ctypes.CDLL("libc.so.6")
        lib.gnu_get_libc_version.restype = ctypes.c_char_p
        version = lib.gnu_get_libc_version().decode()
        lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        return lib, version
    except (OSError, AttributeError):
        return None


def keep_freed_memory(env: Optional[dict] = None) -> dict:
    """Raise glibc's mmap and trim thresholds once per process (see the module docstring).

    Returns
    -------
    dict
        ``{"malloc": "tuned" | "default", "why": str}`` plus ``mmap_threshold`` /
        ``trim_threshold`` (bytes) when tuned. Later calls return the first call's state.
    """
    global _state
    if _state is not None:
        return _state
    env = os.environ if env is None else env
    choice = env.get(ENV, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise SynaugError(f"{ENV}={env.get(ENV)!r} is not one of: {', '.join(CHOICES)}")
    if choice == "default":
        _state = {"malloc": "default", "why": f"{ENV}=default: glibc's thresholds left as they are"}
        return _state
    found = _libc()
    if found is None:
        _state = {"malloc": "default", "why": "not glibc: no mallopt (the platform allocator is used as is)"}
        return _state
    lib, version = found
    mmap_t = MMAP_THRESHOLD
    if lib.mallopt(_M_MMAP_THRESHOLD, mmap_t) != 1:  # older glibc caps the threshold
        mmap_t = _OLD_GLIBC_MAX
        if lib.mallopt(_M_MMAP_THRESHOLD, mmap_t) != 1:
            _state = {"malloc": "default", "why": f"glibc {version} refused a larger mmap threshold"}
            return _state
    ok = lib.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    _state = {"malloc": "tuned", "mmap_threshold": mmap_t, "trim_threshold": TRIM_THRESHOLD if ok else None,
              "why": f"glibc {version}: freed blocks below {mmap_t >> 20} MiB stay in the process for reuse "
                     f"({ENV}=default to leave glibc as it is)"}
    return _state


def state() -> Optional[dict]:
    """What :func:`keep_freed_memory` did in this process (``None`` before it ran)."""
    return _state
