"""CPU threads and the OpenMP wait policy, chosen before torch starts.

PyTorch's CPU kernels run on an OpenMP team (GNU libgomp in the PyPI wheels). By default its
threads *spin* at every barrier for a while before sleeping. When another CPU-bound process
shares the cores, a spinning thread burns the time slice its descheduled partner needs, and a
step made of hundreds of tiny parallel regions slows down several-fold (measured on a 2-core
machine: 21 % of the uncontended speed beside one 2-thread process, where the fair share is 50 %).
A passive wait policy (sleep at once) removes most of that at a small cost when alone.

libgomp reads ``OMP_WAIT_POLICY`` once, when torch is imported, so :func:`configure` must run
before that: the ``synaug`` CLI calls it first thing (its commands import torch lazily), and
child processes (``synaug sweep`` runs, DataLoader workers, torchrun ranks) inherit the
environment it sets.

Knobs (CLI flag > environment variable > default):

=====================  ======================  ==========================================
``synaug --threads N``  ``SYNAUG_THREADS=N``    intra-op threads (``OMP_NUM_THREADS``); default
                                                ``auto``: torch's choice (one per core) unless
                                                ``OMP_NUM_THREADS`` is already set
``synaug --omp-wait``   ``SYNAUG_OMP_WAIT``     ``auto`` (default): passive, unless
                                                ``OMP_WAIT_POLICY`` is already set; ``passive``;
                                                ``active`` (always spin); ``unset`` (OpenMP's own
                                                default: spin a while, then sleep)
=====================  ======================  ==========================================
"""
from __future__ import annotations

import os
import sys
from typing import MutableMapping, Optional

from .errors import SynaugError

ENV_THREADS = "SYNAUG_THREADS"
ENV_WAIT = "SYNAUG_OMP_WAIT"
WAIT_CHOICES = ("auto", "passive", "active", "unset")

#: what :func:`configure` did (``threads``, ``omp_wait_policy``, ``before_torch``), for reports
applied: dict = {}


def configure(threads: Optional[str | int] = None, wait: Optional[str] = None,
              environ: Optional[MutableMapping[str, str]] = None) -> dict:
    """Set the thread count and OpenMP wait policy for this process and its children.

    Parameters
    ----------
    threads : int or "auto", optional
        Intra-op threads; default: ``$SYNAUG_THREADS``, else ``auto``.
    wait : {"auto", "passive", "active", "unset"}, optional
        OpenMP wait policy; default: ``$SYNAUG_OMP_WAIT``, else ``auto`` (= passive unless the
        user set ``OMP_WAIT_POLICY`` themselves); ``unset`` leaves OpenMP's default.
    environ : mapping, optional
        The environment to edit (default ``os.environ``).

    Returns
    -------
    dict
        ``{"threads": int | "auto", "omp_wait_policy": str | None, "before_torch": bool}``;
        ``before_torch`` False means torch was already imported, so the wait policy could not
        take effect (the thread count still does, through ``torch.set_num_threads``).
    """
    env = os.environ if environ is None else environ
    t = str(threads if threads is not None else env.get(ENV_THREADS) or "auto").strip().lower()
    w = str(wait if wait is not None else env.get(ENV_WAIT) or "auto").strip().lower()
    if w not in WAIT_CHOICES:
        raise SynaugError(f"OpenMP wait policy {w!r}: use one of {', '.join(WAIT_CHOICES)} "
                          f"(--omp-wait / ${ENV_WAIT})")
    n: Optional[int] = None
    if t != "auto":
        try:
            n = int(t)
        except ValueError:
            n = 0
        if n < 1:
            raise SynaugError(f"thread count {t!r}: use a positive integer or auto (--threads / ${ENV_THREADS})")
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(n)
    if w == "auto":
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    elif w == "unset":
        env.pop("OMP_WAIT_POLICY", None)
    else:
        env["OMP_WAIT_POLICY"] = w.upper()
    before = "torch" not in sys.modules
    if n is not None and not before:
        import torch

        torch.set_num_threads(n)
    applied.clear()
    applied.update(threads=n if n is not None else "auto", omp_wait_policy=env.get("OMP_WAIT_POLICY"),
                   before_torch=before)
    return dict(applied)


def describe() -> dict:
    """Threads torch uses now and the wait policy in force (for summaries and benchmarks)."""
    import torch

    return {"threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "configured_before_torch": applied.get("before_torch")}
