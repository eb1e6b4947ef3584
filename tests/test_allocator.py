"""glibc malloc thresholds (synaug.allocator): freed tensors stay mapped for reuse."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from synaug import allocator
from synaug.errors import SynaugError

# 30 allocations of a 40 MB tensor: above glibc's largest automatic mmap threshold (32 MiB), so by
# default each one is a fresh mmap whose ~10,000 pages fault in again
_PROBE = """
import json, resource, sys
from synaug.allocator import keep_freed_memory
state = keep_freed_memory()
import torch
for _ in range(10):   # warm-up: the heap reaches its steady state (glibc here: 6 allocations)
    x = torch.ones(10_000_000)
    del x
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(30):
    x = torch.ones(10_000_000)
    del x
print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0, **state}))
"""


def _probe(value: str) -> dict:
    env = {**os.environ, allocator.ENV: value}
    r = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_tuned_malloc_reuses_freed_tensors_instead_of_faulting_them_in_again():
    default, tuned = _probe("default"), _probe("auto")
    assert default["malloc"] == "default" and "left as they are" in default["why"]
    assert tuned["malloc"] == "tuned" and tuned["mmap_threshold"] >= 32 << 20 and "glibc" in tuned["why"]
    assert default["faults"] > 30 * 5_000                 # every allocation faulted in again
    assert tuned["faults"] < default["faults"] / 10       # the freed block was reused


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(allocator, "_state", None)   # the process-wide state, restored after the test
    return allocator


def test_knob_values_and_a_platform_without_glibc(fresh, monkeypatch):
    assert fresh.keep_freed_memory({"SYNAUG_MALLOC": "default"})["malloc"] == "default"
    assert fresh.keep_freed_memory({})["malloc"] == "default"    # the first call decides for the process
    monkeypatch.setattr(fresh, "_state", None)
    with pytest.raises(SynaugError, match="SYNAUG_MALLOC='fast' is not one of: auto, default"):
        fresh.keep_freed_memory({"SYNAUG_MALLOC": "fast"})
    monkeypatch.setattr(fresh, "_libc", lambda: None)
    s = fresh.keep_freed_memory({})
    assert s == {"malloc": "default", "why": "not glibc: no mallopt (the platform allocator is used as is)"}
    assert fresh.state() is s


def test_cli_bad_knob_is_a_one_line_error():
    exe = os.path.join(os.path.dirname(sys.executable), "synaug")
    r = subprocess.run([exe, "plan", "--help"], env={**os.environ, "SYNAUG_MALLOC": "fast"},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "SYNAUG_MALLOC" in r.stderr
