"""CPU threads and the OpenMP wait policy: fast when the machine is the user's alone, graceful
when other processes share it.

PyTorch's CPU kernels run on an OpenMP team (GNU libgomp in the PyPI wheels). By default its
threads *spin* at every barrier for a while before sleeping. Alone on the machine that is the
fastest policy. Beside another CPU-bound process a spinning thread burns the time slice its
descheduled partner needs, and a step made of hundreds of tiny parallel regions slows down
several-fold (measured on a 2-core machine: 21 % of the uncontended speed beside one 2-thread
process, where the fair share is 50 %). A passive wait policy (sleep at once) removes that, but
costs 8-20 % when the machine is idle.

libgomp reads ``OMP_WAIT_POLICY`` once, when torch is imported, so the choice is made before
that, by :func:`configure` (the ``synaug`` CLI calls it first thing; its commands import torch
lazily; child processes inherit the environment it sets). The default, ``auto``, decides from
the load: it samples for :data:`PROBE_S` how many cores other processes keep busy (``/proc/stat``;
processes running under ``nice`` are not counted: they yield to us) and chooses *passive* when at
least :data:`BUSY_CORES` cores stay busy over two such windows, OpenMP's own spin-then-sleep
default otherwise. A run
that started on an idle machine and then meets a competitor is handled between epochs by
:class:`ThreadGovernor`: while other processes keep the cores busy it runs one intra-op thread
(a single thread never waits at a barrier, so it cannot spin), and goes back to the full count
when they are gone.

Knobs (CLI flag > environment variable > default):

=====================  ======================  ==========================================
``synaug --threads N``  ``SYNAUG_THREADS=N``    intra-op threads (``OMP_NUM_THREADS``); default
                                                ``auto``: torch's choice (one per core) unless
                                                ``OMP_NUM_THREADS`` is already set
``synaug --omp-wait``   ``SYNAUG_OMP_WAIT``     ``auto`` (default): decided from the load as
                                                above, unless ``OMP_WAIT_POLICY`` is already
                                                set; ``passive``; ``active`` (always spin);
                                                ``unset`` (OpenMP's own default)
=====================  ======================  ==========================================

The governor acts only under ``auto`` with more than one thread and a spinning policy - or, for a
bf16 step, under ``auto``'s passive choice too (two passive threads of a bf16 step collapse beside a
competitor, one does not: :class:`ThreadGovernor`); an explicit ``--threads`` or ``--omp-wait``
turns it off. Changing the thread count can change the
last bits of reductions (as ``--threads`` always could), so a run whose thread count the governor
changed is not bit-identical to one it left alone; pin ``--threads`` for bit-exact reruns.
"""
from __future__ import annotations

import os
import sys
from typing import MutableMapping, Optional

from .errors import SynaugError

ENV_THREADS = "SYNAUG_THREADS"
ENV_WAIT = "SYNAUG_OMP_WAIT"
WAIT_CHOICES = ("auto", "passive", "active", "unset")
#: seconds :func:`configure` samples the load for under ``auto``
PROBE_S = 0.25
#: cores other processes must keep busy for ``auto`` to choose passive (and for the governor to
#: drop to one thread); the governor restores the full count below :data:`IDLE_CORES`
BUSY_CORES = 0.5
IDLE_CORES = 0.25
NOT_PROBED = "not probed (this command runs no parallel work)"

#: what :func:`configure` did (``threads``, ``omp_wait_policy``, ``omp_wait_reason``,
#: ``before_torch``, ``adaptive``), for reports
applied: dict = {}


def _proc_stat() -> Optional[tuple[int, int]]:
    """``(busy ticks of processes at our priority or above, busy ticks including niced ones)``,
    summed over all CPUs; None where ``/proc/stat`` is absent."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:8]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = v
    return user + system + irq + softirq, user + nice + system + irq + softirq


def _own_ticks() -> int:
    """CPU ticks used by this process and its live descendants (e.g. DataLoader workers)."""
    me = os.getpid()
    stats: dict[int, tuple[int, int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        stats[int(d)] = (int(rest[1]), int(rest[11]) + int(rest[12]))  # ppid, utime + stime
    tree, total, grew = {me}, 0, True
    while grew:
        grew = False
        for pid, (ppid, _) in stats.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    for pid in tree:
        total += stats.get(pid, (0, 0))[1]
    return total


class LoadMeter:
    """Cores kept busy by *other* processes since the last :meth:`read` (``/proc``-based)."""

    def __init__(self):
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.niced = hasattr(os, "nice") and os.nice(0) > 0  # we run niced: count niced peers
        self._last = self._sample()

    @property
    def available(self) -> bool:
        return self._last is not None

    def _sample(self):
        import time

        st = _proc_stat()
        if st is None:
            return None
        return st[1] if self.niced else st[0], _own_ticks(), time.monotonic()

    def read(self) -> Optional[float]:
        now = self._sample()
        if now is None or self._last is None:
            return None
        (b0, o0, t0), (b1, o1, t1) = self._last, now
        self._last = now
        if t1 - t0 <= 0:
            return None
        return max(0.0, ((b1 - b0) - (o1 - o0)) / self.hz / (t1 - t0))


def busy_cores(seconds: float = PROBE_S) -> Optional[float]:
    """Cores other processes keep busy, sampled over ``seconds`` (None where unknown)."""
    import time

    m = LoadMeter()
    if not m.available:
        return None
    time.sleep(seconds)
    return m.read()


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _auto_policy(env: MutableMapping[str, str], n: Optional[int], probe: bool) -> tuple[Optional[str], str]:
    """OpenMP wait policy chosen by ``auto`` and why (None = OpenMP's own default)."""
    if "OMP_WAIT_POLICY" in env:
        return env["OMP_WAIT_POLICY"], "OMP_WAIT_POLICY set in the environment"
    threads = n if n is not None else int(env.get("OMP_NUM_THREADS") or 0) or _cpu_count()
    if threads <= 1:
        return None, "one thread: it never waits at a barrier"
    if not probe:
        return None, NOT_PROBED
    busy = busy_cores()
    if busy is not None and busy >= BUSY_CORES:  # a blip (a flush, a process ending) or a competitor?
        busy = min(busy, busy_cores() or 0.0)
    if busy is None:
        return "PASSIVE", "load unknown (no /proc/stat): passive is the safe choice"
    if busy >= BUSY_CORES:
        return "PASSIVE", f"{busy:.2f} cores busy with other processes at start"
    return None, f"machine idle at start ({busy:.2f} cores busy with other processes): spin"


def configure(threads: Optional[str | int] = None, wait: Optional[str] = None,
              environ: Optional[MutableMapping[str, str]] = None, probe: bool = True) -> dict:
    """Set the thread count and OpenMP wait policy for this process and its children.

    Parameters
    ----------
    threads : int or "auto", optional
        Intra-op threads; default: ``$SYNAUG_THREADS``, else ``auto``.
    wait : {"auto", "passive", "active", "unset"}, optional
        OpenMP wait policy; default: ``$SYNAUG_OMP_WAIT``, else ``auto`` (decided from the load,
        see the module docstring; the user's own ``OMP_WAIT_POLICY`` wins); ``unset`` leaves
        OpenMP's default.
    environ : mapping, optional
        The environment to edit (default ``os.environ``).
    probe : bool
        Whether ``auto`` may sample the load (:data:`PROBE_S` seconds); commands that run no
        parallel work pass False.

    Returns
    -------
    dict
        ``{"threads": int | "auto", "omp_wait_policy": str | None, "omp_wait_reason": str,
        "before_torch": bool, "adaptive": bool, "auto": bool, "busy_at_start": bool}``;
        ``before_torch`` False means torch was already imported, so the wait policy could not take
        effect (the thread count still does, through ``torch.set_num_threads``); ``adaptive``: the
        :class:`ThreadGovernor` may act; ``auto``: both knobs were left to ``auto`` (the governor may
        act for a step whose passive team collapses too); ``busy_at_start``: ``auto`` chose passive
        because other processes kept the cores busy (or the load was unknown).
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
    user_policy = "OMP_WAIT_POLICY" in env
    if w == "auto":
        policy, reason = _auto_policy(env, n, probe)
        if policy is not None:
            env["OMP_WAIT_POLICY"] = policy
    elif w == "unset":
        env.pop("OMP_WAIT_POLICY", None)
        reason = "--omp-wait unset"
    else:
        env["OMP_WAIT_POLICY"] = w.upper()
        reason = f"--omp-wait {w}"
    before = "torch" not in sys.modules
    if n is not None and not before:
        import torch

        torch.set_num_threads(n)
    chosen = (w == "auto" and t == "auto" and not user_policy and "OMP_NUM_THREADS" not in env
              and reason != NOT_PROBED)
    passive = env.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
    applied.clear()
    applied.update(threads=n if n is not None else "auto", omp_wait_policy=env.get("OMP_WAIT_POLICY"),
                   omp_wait_reason=reason, before_torch=before, adaptive=chosen and not passive,
                   auto=chosen, busy_at_start=chosen and passive)
    return dict(applied)


def describe() -> dict:
    """Threads torch uses now and the wait policy in force (for summaries and benchmarks)."""
    import torch

    return {"threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "omp_wait_reason": applied.get("omp_wait_reason"),
            "configured_before_torch": applied.get("before_torch")}


class ThreadGovernor:
    """Between epochs: one intra-op thread while other processes keep :data:`BUSY_CORES` or more
    cores busy (a spinning OpenMP team collapses beside them), the full count again once they
    stay under :data:`IDLE_CORES`.

    Active only where :func:`configure` chose the policy under ``auto``, the team spins (not
    passive) and has more than one thread; otherwise :meth:`check` does nothing. A step whose
    team collapses beside other processes even when passive (``passive_collapses``: bf16 autocast
    on a CPU, where every layer adds casts - measured on a 2-core AMD EPYC with AVX512-BF16: two
    passive threads kept 12 % of their speed alone beside a 2-thread competitor, one thread 43 %
    of it) is governed under ``auto``'s passive choice too, and starts at one thread when the
    machine was busy at start.

    Parameters
    ----------
    enabled : bool, optional
        Force on / off (tests); default: as :func:`configure` decided.
    meter : LoadMeter, optional
        Where the load is read (tests pass a stand-in).
    passive_collapses : bool
        The run's step collapses beside other processes under a passive team as well (bf16 on CPU).
    busy_at_start : bool, optional
        Other processes kept the cores busy when the process started (tests); default: as
        :func:`configure` found.
    """

    def __init__(self, enabled: Optional[bool] = None, meter=None, passive_collapses: bool = False,
                 busy_at_start: Optional[bool] = None):
        import torch

        restore_threads()  # a run before this one in the process may have ended at one thread
        self.full = torch.get_num_threads()
        if enabled is None:
            enabled = applied.get("adaptive", False) or (passive_collapses and applied.get("auto", False))
        self.meter = (meter or LoadMeter()) if enabled and self.full > 1 else None
        if self.meter is not None and not self.meter.available:
            self.meter = None
        self.events: list[str] = []
        self.checks = 0
        busy = applied.get("busy_at_start", False) if busy_at_start is None else busy_at_start
        if self.meter is not None and passive_collapses and busy:
            _lowered["from"] = self.full
            torch.set_num_threads(1)
            self.events.append("start: cores busy with other processes at start and a bf16 step "
                               "(its team collapses beside them even when passive): 1 thread")

    def check(self, log=None) -> Optional[str]:
        """Read the load since the last check and set the thread count; returns what changed."""
        if self.meter is None:
            return None
        import torch

        self.checks += 1
        busy = self.meter.read()
        if busy is None:
            return None
        now = torch.get_num_threads()
        event = None
        if now > 1 and busy >= BUSY_CORES:
            _lowered["from"] = now
            torch.set_num_threads(1)
            event = f"check {self.checks}: {busy:.2f} cores busy with other processes: 1 thread"
        elif now < self.full and busy < IDLE_CORES:
            _lowered.clear()
            torch.set_num_threads(self.full)
            event = f"check {self.checks}: {busy:.2f} cores busy with other processes: {self.full} threads"
        if event:
            self.events.append(event)
            if log is not None:
                log(f"synaug: {event}")
        return event

    def summary(self) -> dict:
        return {"governor": self.meter is not None, "governor_events": list(self.events)}

    def close(self) -> None:
        """The run is over: give the process its full thread count back."""
        restore_threads()


#: the thread count a governor lowered from (empty: none lowered, or restored since)
_lowered: dict[str, int] = {}


def restore_threads() -> None:
    """Undo a :class:`ThreadGovernor`'s drop to one thread (a later run, or the caller, gets the
    count the process had); nothing if no governor lowered it."""
    if "from" in _lowered:
        import torch

        if torch.get_num_threads() == 1:
            torch.set_num_threads(_lowered["from"])
        _lowered.clear()
