"""Mixed precision and compilation chosen per device: ``amp: auto`` and ``compile: auto``.

``amp: auto`` (the default) is **fp32 on every CPU** and bf16 autocast on CUDA devices of compute
capability 8.0 and newer. On a CPU with native bf16 matrix units (AMX-BF16 / AVX512-BF16, oneDNN's
bf16 kernels) bf16 trains faster - measured 1.6x fp32 on an Intel CPU with AMX, 1.76x on an AMD EPYC
with AVX512-BF16 - but it failed issue 18's accuracy check there (:data:`CPU_BF16_ACCURACY`:
the demo's SYNAuG run lost 2.16 points top-1 in every one of 3 seeds), so ``auto`` keeps fp32 and
says so; ``amp: bf16`` (or ``$SYNAUG_CPU_BF16=1`` for ``auto``) trades that accuracy for the speed.
On a CPU without those units bf16 is *slower* than fp32 (ResNet-32, batch 128): 12x slower with
AVX2 only (AMD EPYC Zen 3: oneDNN's reference kernels), 2.3x slower with AVX-512 but no bf16 units
(Intel Xeon, where oneDNN reports bf16 support but converts in software). The choice and its reason
are recorded in each run's ``summary.json`` and report.

``compile: auto`` compiles the training step's forward half (``torch.compile``) when the run is
long enough for the measured speed-up to repay the cold start, and a compiler toolchain exists
(a C++ compiler on the CPU, Triton on CUDA); see :func:`resolve_compile`.
"""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
from pathlib import Path
from typing import Optional

import torch

#: environment override of the CPU bf16 probe (``1`` / ``0``)
ENV_CPU_BF16 = "SYNAUG_CPU_BF16"
#: CPU feature flags (``/proc/cpuinfo``) of native bf16 matrix units
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
#: why ``amp: auto`` keeps fp32 on a CPU with bf16 units (docs/speed.md, "A CPU with bf16 units";
#: ``reproduce_cpu.py --only precision`` on 2026-12-07, CE and SYNAuG at seeds 0-2)
CPU_BF16_ACCURACY = ("bf16 training failed the accuracy check at the demo's configuration (SYNAuG top-1 "
                     "-2.16 +/- 1.11 points against fp32, 3/3 seeds lower, on an AMD EPYC with AVX512-BF16; "
                     "docs/speed.md): amp: bf16 or $SYNAUG_CPU_BF16=1 trade that for ~1.8x the speed")
#: ``compile: auto`` compiles runs of at least this many optimizer steps (full batches, all
#: epochs): the cold start (tracing + C++ build, ~60 s per step variant on a 2-core CPU, a few
#: seconds once inductor's cache holds the graphs) must be repaid by the per-step gain, measured
#: 1.05-1.17x on an AVX2 CPU and 1.29x on an AMX one at ~0.5 s per CPU step (docs/speed.md)
COMPILE_MIN_STEPS = {"cpu": 2000, "cuda": 2000}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
    """The CPU's feature flags as Linux reports them (empty where ``/proc/cpuinfo`` is absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def onednn_bf16() -> bool:
    """Whether this torch build's oneDNN has bf16 kernels for this CPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_bf16_support() -> tuple[bool, str]:
    """``(fast, why)``: whether this CPU runs bf16 matrix work natively.

    ``$SYNAUG_CPU_BF16`` = ``1`` / ``0`` overrides the probe (``1`` also makes ``amp: auto`` use
    bf16 on the CPU, accepting :data:`CPU_BF16_ACCURACY`; the test suite sets ``0`` so that it runs
    the same arithmetic on every CPU).
    """
    forced = os.environ.get(ENV_CPU_BF16, "").strip()
    if forced in ("0", "1"):
        return forced == "1", f"${ENV_CPU_BF16}={forced}"
    have = [f for f in BF16_CPU_FLAGS if f in cpu_flags()]
    onednn = onednn_bf16()
    if have and onednn:
        return True, f"CPU has {' and '.join(have)} (oneDNN bf16 kernels)"
    if have:
        return False, f"CPU has {' and '.join(have)} but this torch build's oneDNN has no bf16 kernels"
    return False, ("CPU has no AMX-BF16 / AVX512-BF16 units (bf16 training measured 2-12x slower than fp32 "
                   "on such CPUs)")


def cuda_bf16_support(device: torch.device) -> tuple[bool, str]:
    major, minor = torch.cuda.get_device_capability(device)
    name = torch.cuda.get_device_name(device)
    if major >= 8:
        return True, f"{name} (compute capability {major}.{minor}) has bf16 tensor cores"
    return False, (f"{name} (compute capability {major}.{minor}) has no bf16 tensor cores "
                   "(amp: fp16 is the mixed precision for it)")


def resolve_amp(requested: str, device: torch.device) -> tuple[str, str]:
    """The precision a run uses: ``("off" | "bf16" | "fp16", why)``.

    ``requested`` is the config's ``amp``; only ``auto`` is resolved, other values are kept.
    """
    if requested == "bf16-emulated":
        return requested, ("amp: bf16-emulated (config): bf16 numerics emulated with fp32 kernels, "
                           "a numerics check, not a speed option")
    if requested != "auto":
        return requested, f"amp: {requested} (config)"
    if device.type == "cpu":
        fast, why = cpu_bf16_support()
        if fast and os.environ.get(ENV_CPU_BF16, "").strip() != "1":   # fast, but not accurate enough
            fast, why = False, f"{why}, but {CPU_BF16_ACCURACY}"
    elif device.type == "cuda":
        fast, why = cuda_bf16_support(device)
    else:
        fast, why = False, f"device {device.type}: bf16 autocast not known to pay"
    return ("bf16" if fast else "off"), f"amp: auto -> {'bf16' if fast else 'fp32'}: {why}"


def autocast(amp: str, device: torch.device, cache_enabled: bool = True):
    """Autocast context for a resolved ``amp`` (``off``: a no-op context; ``bf16-emulated``: the
    fp32 emulation of bf16 numerics, :mod:`synaug.train.emulate`)."""
    if amp == "off":
        return contextlib.nullcontext()
    if amp == "bf16-emulated":
        from .emulate import BF16Emulation

        return BF16Emulation()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache_enabled)


def _cpu_compiler() -> Optional[str]:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def resolve_compile(requested, device: torch.device, steps: int) -> tuple[bool | str, str]:
    """Whether (and how) the step is compiled: ``(value for TrainStep, why)``.

    ``requested`` is the config's ``compile``; ``auto`` compiles (mode ``default``) runs of at
    least :data:`COMPILE_MIN_STEPS` full-batch steps where a toolchain exists.
    """
    if requested != "auto":
        return requested, f"compile: {requested} (config)"
    need = COMPILE_MIN_STEPS.get(device.type)
    if need is None:
        return False, f"compile: auto -> off: device {device.type}"
    if device.type == "cpu" and _cpu_compiler() is None:
        return False, "compile: auto -> off: no C++ compiler found (torch.compile's CPU backend needs one)"
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return False, "compile: auto -> off: Triton is not installed"
    if steps < need:
        return False, f"compile: auto -> off: {steps} steps < {need} (the cold start would not pay)"
    return True, f"compile: auto -> on: {steps} steps >= {need}"
