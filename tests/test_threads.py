"""The CPU-contention knob (synaug.threads): the thread count and OpenMP wait policy are applied,
before torch is imported, from the CLI flag or the environment. (Speed is measured by
benchmarks/bench_contention.py, not here.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from synaug import threads
from synaug.errors import SynaugError
from synaug.threads import configure


def test_configure_sets_the_environment_openmp_reads(monkeypatch):
    monkeypatch.setattr(threads, "busy_cores", lambda seconds=threads.PROBE_S: 0.0)
    env = {}
    out = configure(None, None, env)
    assert env == {} and out["omp_wait_policy"] is None                  # idle machine: OpenMP's spin
    assert "idle at start" in out["omp_wait_reason"] and out["adaptive"] is True
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    out = configure("auto", "auto", env)
    assert env["OMP_WAIT_POLICY"] == "ACTIVE" and out["adaptive"] is False  # the user's own setting wins
    env = {"SYNAUG_THREADS": "3", "SYNAUG_OMP_WAIT": "active"}
    out = configure(None, None, env)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3" and env["OMP_WAIT_POLICY"] == "ACTIVE"
    assert out["threads"] == 3 and out["adaptive"] is False
    env = {"SYNAUG_THREADS": "3", "OMP_WAIT_POLICY": "PASSIVE"}
    configure("1", "unset", env)                                           # flags beat the environment
    assert env["OMP_NUM_THREADS"] == "1" and "OMP_WAIT_POLICY" not in env
    for bad in ("0", "two", "-1"):
        with pytest.raises(SynaugError, match="thread count"):
            configure(bad, None, {})
    with pytest.raises(SynaugError, match="wait policy 'spin'"):
        configure(None, "spin", {})


def test_a_blip_at_start_is_not_a_competitor(monkeypatch):
    readings = [1.2, 0.1]
    monkeypatch.setattr(threads, "busy_cores", lambda seconds=threads.PROBE_S: readings.pop(0))
    monkeypatch.setattr(threads, "_cpu_count", lambda: 2)
    env = {}
    assert configure(None, None, env)["omp_wait_policy"] is None and not readings


@pytest.mark.parametrize("busy,policy,reason", [
    (0.1, None, "idle at start (0.10 cores busy"),
    (0.5, "PASSIVE", "0.50 cores busy with other processes at start"),
    (1.9, "PASSIVE", "1.90 cores busy"),
    (None, "PASSIVE", "load unknown"),
])
def test_auto_decides_the_wait_policy_from_the_load_at_start(monkeypatch, busy, policy, reason):
    calls = []
    monkeypatch.setattr(threads, "busy_cores", lambda seconds=threads.PROBE_S: calls.append(seconds) or busy)
    monkeypatch.setattr(threads, "_cpu_count", lambda: 2)
    env = {}
    out = configure(None, None, env)
    # a busy first window is confirmed by a second one (a blip is not a competitor)
    assert env.get("OMP_WAIT_POLICY") == policy and reason in out["omp_wait_reason"]
    assert len(calls) == (2 if busy is not None and busy >= threads.BUSY_CORES else 1)
    calls.clear()
    assert out["adaptive"] is (policy is None)       # the governor watches a spinning team only ...
    assert out["auto"] is True and out["busy_at_start"] is (policy == "PASSIVE")   # ... or a bf16 step
    # nothing to decide: one thread never waits at a barrier; a command without parallel work
    for env, probe in (({"OMP_NUM_THREADS": "1"}, True), ({}, False)):
        out = configure(None, None, env, probe=probe)
        assert "OMP_WAIT_POLICY" not in env and not calls and out["adaptive"] is False
        assert out["busy_at_start"] is False


def test_load_meter_counts_other_processes_not_our_own_work(monkeypatch):
    clock = {"t": 0.0, "busy": 1000, "niced": 5000, "own": 300}
    monkeypatch.setattr(threads, "_proc_stat", lambda: (clock["busy"], clock["busy"] + clock["niced"]))
    monkeypatch.setattr(threads, "_own_ticks", lambda: clock["own"])
    monkeypatch.setattr("time.monotonic", lambda: clock["t"])
    monkeypatch.setattr(os, "nice", lambda inc: 0)
    m = threads.LoadMeter()
    m.hz = 100
    # 2 s: 300 busy ticks on the machine, 180 of them ours, niced processes 400 ticks
    clock.update(t=2.0, busy=1300, niced=5400, own=480)
    assert m.read() == pytest.approx((300 - 180) / 100 / 2.0)       # 0.6 cores of others
    clock.update(t=3.0, busy=1400, own=580)                          # all of it ours
    assert m.read() == 0.0
    monkeypatch.setattr(os, "nice", lambda inc: 5)                  # we run niced: niced peers count
    m = threads.LoadMeter()
    m.hz = 100
    clock.update(t=4.0, busy=1450, niced=5550, own=600)
    assert m.read() == pytest.approx((50 + 150 - 20) / 100)


def test_own_ticks_include_our_children():
    import time

    def ticks(pid):
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])

    busy = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<60: pass"])
    try:
        own0, child0 = threads._own_ticks(), ticks(busy.pid)
        deadline = time.monotonic() + 50
        while ticks(busy.pid) - child0 < 20 and time.monotonic() < deadline:  # whatever the load
            time.sleep(0.05)
        child1, own1 = ticks(busy.pid), threads._own_ticks()
        assert child1 - child0 >= 20
        assert own1 - own0 >= child1 - child0     # the busy child's CPU time is counted as ours
    finally:
        busy.kill()
        busy.wait()


class FakeMeter:
    available = True

    def __init__(self, loads):
        self.loads = list(loads)

    def read(self):
        return self.loads.pop(0)


def test_governor_drops_to_one_thread_under_contention_and_comes_back():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gov = threads.ThreadGovernor(enabled=True, meter=FakeMeter([0.1, 0.9, 0.4, 0.2, 0.3, 1.5]))
        seen = []
        for _ in range(6):
            gov.check()
            seen.append(torch.get_num_threads())
        # 0.1 idle: stay; 0.9 busy: 1 thread; 0.4 (between the marks): stay; 0.2 idle: back to 2; ...
        assert seen == [2, 1, 1, 2, 2, 1]
        assert len(gov.events) == 3 and "0.90 cores busy" in gov.events[0]
        assert gov.summary() == {"governor": True, "governor_events": gov.events}
        assert torch.get_num_threads() == 1
        gov.close()                               # the run ends: its threads are given back
        assert torch.get_num_threads() == 2
        off = threads.ThreadGovernor(enabled=False, meter=FakeMeter([1.5]))
        assert off.check() is None and torch.get_num_threads() == 2 and off.summary()["governor"] is False
    finally:
        torch.set_num_threads(n)


def test_a_bf16_step_is_governed_under_auto_passive_too_and_starts_at_one_thread_when_busy(monkeypatch):
    """Two passive threads of a bf16 step collapse beside a competitor (bench_contention.py: 12 % of
    alone; one thread 43 %): under ``auto`` the governor then acts although the team is passive, and
    a run that starts on a busy machine starts at one thread. fp32 steps keep the passive team."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(2)
    busy_passive = {"adaptive": False, "auto": True, "busy_at_start": True}
    try:
        monkeypatch.setattr(threads, "applied", dict(busy_passive))
        fp32 = threads.ThreadGovernor(meter=FakeMeter([1.5]))
        assert fp32.meter is None and fp32.check() is None and torch.get_num_threads() == 2
        bf16 = threads.ThreadGovernor(meter=FakeMeter([1.5, 0.1, 0.9]), passive_collapses=True)
        assert torch.get_num_threads() == 1 and bf16.events[0].startswith("start: cores busy")
        seen = []
        for _ in range(3):
            bf16.check()
            seen.append(torch.get_num_threads())
        assert seen == [1, 2, 1]                  # still busy; the competitor left; it came back
        bf16.close()
        assert torch.get_num_threads() == 2
        monkeypatch.setattr(threads, "applied", {"adaptive": True, "auto": True, "busy_at_start": False})
        idle = threads.ThreadGovernor(meter=FakeMeter([0.9]), passive_collapses=True)   # spin: starts full
        assert torch.get_num_threads() == 2 and idle.events == [] and idle.meter is not None
        idle.check()
        assert torch.get_num_threads() == 1
        idle.close()
        monkeypatch.setattr(threads, "applied", {"adaptive": False, "auto": False, "busy_at_start": False})
        user = threads.ThreadGovernor(meter=FakeMeter([1.5]), passive_collapses=True)   # --omp-wait passive
        assert user.meter is None and torch.get_num_threads() == 2
        applied = configure(wait="auto", environ={}, probe=False)   # nothing probed: not auto's choice
        assert applied["auto"] is False and applied["busy_at_start"] is False
    finally:
        torch.set_num_threads(n)


def test_a_run_after_a_lowered_run_in_one_process_gets_every_thread_back():
    """Experiments run many trainings in one process: a run that ended at one thread (killed, or
    before close()) must not leave the next run at one thread, with its governor off."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first = threads.ThreadGovernor(enabled=True, meter=FakeMeter([1.5]))
        first.check()
        assert torch.get_num_threads() == 1          # lowered, and never closed
        second = threads.ThreadGovernor(enabled=True, meter=FakeMeter([0.0]))
        assert torch.get_num_threads() == 2 and second.full == 2 and second.meter is not None
        torch.set_num_threads(1)                     # the user's own choice is left alone
        threads.ThreadGovernor(enabled=True, meter=FakeMeter([0.0]))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_train(tmp_path_factory):
    from synaug.train.toydata import make_toy_manifest

    d = tmp_path_factory.mktemp("threads")
    make_toy_manifest(d / "img", [6, 6], size=16, seed=0).write(d / "train.parquet")
    (d / "train.yaml").write_text(yaml.safe_dump({"epochs": 1, "batch_size": 12, "model": {"width": 2},
                                                  "progress": False, "data": {"cache_dir": str(d / "cache")}}))
    return d


def _train(d: Path, out: str, *flags, env_extra=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "SYNAUG_THREADS", "SYNAUG_OMP_WAIT")}
    env.update(env_extra or {})
    exe = Path(sys.executable).parent / "synaug"
    r = subprocess.run([str(exe), *flags, "train", "-c", str(d / "train.yaml"), "--train-manifest",
                        str(d / "train.parquet"), "--out", str(d / out)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads((d / out / "summary.json").read_text())["cpu"]


def test_cli_flags_are_applied_before_torch_starts(tiny_train):
    cpu = _train(tiny_train, "flags", "--threads", "1", "--omp-wait", "active")
    assert cpu.pop("malloc")["malloc"] == "tuned"   # synaug.allocator, glibc here
    assert cpu == {"threads": 1, "omp_wait_policy": "ACTIVE", "omp_wait_reason": "--omp-wait active",
                   "configured_before_torch": True, "governor": False, "governor_events": []}


def test_environment_knob_and_default(tiny_train):
    cpu = _train(tiny_train, "env", env_extra={"SYNAUG_THREADS": "1", "SYNAUG_OMP_WAIT": "passive"})
    assert cpu["threads"] == 1 and cpu["omp_wait_policy"] == "PASSIVE" and cpu["configured_before_torch"]
    cpu = _train(tiny_train, "default")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    torch_default = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                                   env=env, capture_output=True, text=True).stdout.strip()
    assert cpu["threads"] == int(torch_default)      # torch's own choice
    # the default decided from the load at start (the suite's other worker may be busy or not)
    if cpu["threads"] > 1:
        assert (cpu["omp_wait_policy"], "idle at start" in cpu["omp_wait_reason"]) in {("PASSIVE", False), (None, True)}
        assert cpu["governor"] is (cpu["omp_wait_policy"] is None)


def test_bad_knob_is_a_one_line_error(tiny_train):
    exe = Path(sys.executable).parent / "synaug"
    r = subprocess.run([str(exe), "--threads", "zero", "train", "--help"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--threads" in r.stderr
