"""``amp: auto`` / ``compile: auto`` (synaug.train.precision): the probe's decisions with the CPU
features and CUDA capability mocked, a bf16 step against an fp32 step, and a failed automatic
compile going on eagerly. (Speed is measured by benchmarks/bench_train.py, not here.)

Tolerance of one bf16 step (ResNet-32 of width 4 at initialisation, 32 random 16x16 images,
Mixup, one SGD step at lr 0.1): the loss within 1 % of fp32; the weight update dw (all
parameters as one vector) with ||dw_bf16 - dw_fp32|| / ||dw_fp32|| <= 0.4 and cosine >= 0.9
(measured on an AVX2 CPU, oneDNN's reference bf16 kernels: 0.20 and 0.98; at width 16, 0.30 and
0.96). bf16 keeps 8 significant bits (2^-9 relative rounding per value); the gradients of a
randomly initialised 30-layer net on noise images are small sums with heavy cancellation, so
their relative error is large while the direction holds. Whether that moves accuracy is measured
in training (docs/speed.md), not here.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from synaug.train import TrainConfig, train_model
from synaug.train import precision as P
from synaug.train.algorithms import DataInfo, build_algorithm
from synaug.train.data import ImageSet
from synaug.train.loop import build_model
from synaug.train.optim import build_optimizer
from synaug.train.step import TrainStep
from synaug.train.toydata import make_toy_manifest

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


@pytest.fixture
def probe(monkeypatch):
    """Set the CPU's flags and oneDNN's bf16 support: ``probe(flags, onednn)``."""
    monkeypatch.delenv(P.ENV_CPU_BF16, raising=False)

    def _set(flags, onednn=True):
        monkeypatch.setattr(P, "cpu_flags", lambda: frozenset(flags))
        monkeypatch.setattr(P, "onednn_bf16", lambda: onednn)
    return _set


@pytest.mark.parametrize("flags,onednn,units", [
    ({"avx2", "fma"}, False, False),                 # AVX2 only (e.g. AMD Zen 3): reference kernels
    # AVX-512 without bf16 units (a Xeon, docs/speed.md): oneDNN reports bf16 support (it converts
    # in software), but bf16 training measured 0.44x fp32 there
    ({"avx512f", "avx512bw", "avx512_vnni"}, True, False),
    ({"avx512f", "avx512_bf16"}, True, True),        # AVX512-BF16 (AMD Zen 4: 1.76x fp32)
    ({"avx512f", "amx_bf16", "amx_tile"}, True, True),  # AMX (Sapphire Rapids and newer)
    ({"amx_bf16"}, False, False),                    # units present, but the torch build lacks the kernels
])
def test_amp_auto_on_cpu_is_fp32_and_says_why(probe, flags, onednn, units):
    """bf16 units make bf16 fast, but it failed the accuracy check (issue 18): ``auto`` keeps fp32 on
    every CPU, and its reason names the units and, where they exist, the accuracy check."""
    probe(flags, onednn)
    used, why = P.resolve_amp("auto", CPU)
    assert used == "off" and why.startswith("amp: auto -> fp32: ")
    assert P.cpu_bf16_support()[0] is units
    assert ("failed the accuracy check" in why) is units and ("(oneDNN bf16 kernels)" in why) is units
    for explicit in ("off", "bf16", "fp16"):         # explicit values are never second-guessed
        assert P.resolve_amp(explicit, CPU)[0] == explicit


def test_environment_overrides_the_cpu_probe(probe, monkeypatch):
    probe({"amx_bf16"}, True)
    monkeypatch.setenv(P.ENV_CPU_BF16, "0")
    assert P.resolve_amp("auto", CPU) == ("off", "amp: auto -> fp32: $SYNAUG_CPU_BF16=0")
    probe({"avx2"}, False)
    monkeypatch.setenv(P.ENV_CPU_BF16, "1")           # the opt-in: auto takes bf16 on the CPU
    assert P.resolve_amp("auto", CPU) == ("bf16", "amp: auto -> bf16: $SYNAUG_CPU_BF16=1")


@pytest.mark.parametrize("cap,want", [((9, 0), "bf16"), ((8, 0), "bf16"), ((7, 5), "off"), ((6, 0), "off")])
def test_amp_auto_on_cuda_follows_the_compute_capability(monkeypatch, cap, want):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: cap)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Fake GPU")
    used, why = P.resolve_amp("auto", torch.device("cuda", 0))
    assert used == want and f"compute capability {cap[0]}.{cap[1]}" in why
    assert P.resolve_amp("auto", torch.device("mps"))[0] == "off"


def test_compile_auto_needs_a_long_run_and_a_toolchain(monkeypatch):
    need = P.COMPILE_MIN_STEPS["cpu"]
    monkeypatch.setattr(P, "_cpu_compiler", lambda: "g++")
    assert P.resolve_compile("auto", CPU, need)[0] is True
    on, why = P.resolve_compile("auto", CPU, need - 1)
    assert on is False and "would not pay" in why
    monkeypatch.setattr(P, "_cpu_compiler", lambda: None)
    on, why = P.resolve_compile("auto", CPU, 10 * need)
    assert on is False and "no C++ compiler" in why
    assert P.resolve_compile(True, CPU, 1)[0] is True            # explicit values are kept
    assert P.resolve_compile(False, CPU, 10 ** 9)[0] is False
    assert P.resolve_compile("max-autotune", CPU, 1)[0] == "max-autotune"
    assert P.resolve_compile("auto", torch.device("mps"), 10 ** 9)[0] is False


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("precision")
    m = make_toy_manifest(d / "img", [12, 12, 8], size=16, seed=0)
    return m, str(d / "cache")


def _cfg(cache, **over):
    base = {"epochs": 1, "batch_size": 32, "seed": 0, "model": {"width": 4}, "progress": False,
            "schedule": {"warmup_epochs": 0, "milestones": [], "factors": []}, "optim": {"lr": 0.1},
            "data": {"cache_dir": cache, "mode": "memory"}}
    base.update(over)
    return TrainConfig.model_validate(base)


def _one_step(m, cfg, amp):
    images = ImageSet(m, cfg.data, "training", CPU, cfg.channels_last)
    info = DataInfo(m.df["label"].to_numpy(), m.df["group"].to_numpy(), m.num_classes, 0, 1)
    algo = build_algorithm(cfg.algorithm, info, CPU)
    torch.manual_seed(0)
    model = build_model(cfg, m.num_classes).to(memory_format=torch.channels_last)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = build_optimizer(model.parameters(), cfg.optim)
    step = TrainStep(model, model, opt, algo, images, cfg, CPU, None, "eager", amp=amp, compile_=False)
    step.set_optimizer(opt)
    model.train()
    loss, n = step.run_epoch(0, [torch.arange(32)], np.random.default_rng(1), np.random.default_rng(2),
                             torch.Generator(), True)
    update = torch.cat([(v.detach() - before[k]).flatten() for k, v in model.named_parameters()])
    return loss / n, update


def test_a_bf16_step_matches_an_fp32_step_within_tolerance(toy):
    m, cache = toy
    cfg = _cfg(cache)
    (l32, d32), (l16, d16) = _one_step(m, cfg, "off"), _one_step(m, cfg, "bf16")
    assert float(d32.norm()) > 1e-3                        # the step moved the weights
    assert abs(l16 - l32) <= 0.01 * abs(l32)               # forward: loss within 1 %
    rel = float((d16 - d32).norm() / d32.norm())
    cos = float(torch.nn.functional.cosine_similarity(d16, d32, dim=0))
    assert 0 < rel <= 0.4 and cos >= 0.9, (rel, cos)       # bf16 really ran, and went the same way


def test_the_bf16_emulation_is_close_to_real_bf16(toy):
    """amp: bf16-emulated (fp32 kernels, bf16 rounding) against real bf16 autocast (oneDNN's bf16
    kernels; slow on CPUs without bf16 units, fine for one tiny step): the emulated update is at
    least 3x closer to the real bf16 update than the fp32 update is (measured 4-6x), and the
    emulation is not fp32 in disguise."""
    m, cache = toy
    cfg = _cfg(cache)
    (_, d32), (_, d16), (_, demu) = (_one_step(m, cfg, a) for a in ("off", "bf16", "bf16-emulated"))
    emu_err, fp32_err = float((demu - d16).norm()), float((d32 - d16).norm())
    assert emu_err * 3 <= fp32_err, (emu_err, fp32_err)
    assert float((demu - d32).norm()) > 0


def test_summary_records_the_resolved_precision(toy, tmp_path, probe):
    m, cache = toy
    probe({"avx2"}, False)
    train_model(m, None, _cfg(cache), tmp_path / "r")
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["amp"]["requested"] == "auto" and s["amp"]["used"] == "off"
    assert "no AMX-BF16 / AVX512-BF16" in s["amp"]["why"]
    assert s["step"]["compile"] is False and "would not pay" in s["step"]["compile_why"]


def test_a_failed_automatic_compile_goes_on_eagerly(toy, tmp_path, monkeypatch):
    m, cache = toy

    def broken_compile(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("InductorError: no working C++ compiler\nmore detail")
        return run

    eager = train_model(m, None, _cfg(cache, compile=False), tmp_path / "eager")
    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(P, "COMPILE_MIN_STEPS", {"cpu": 1})
    monkeypatch.setattr(P, "_cpu_compiler", lambda: "g++")
    with pytest.warns(UserWarning, match="torch.compile of the training step failed"):
        res = train_model(m, None, _cfg(cache), tmp_path / "auto")
    step = json.loads((tmp_path / "auto" / "summary.json").read_text())["step"]
    assert step["compile"] is False and "compilation failed (InductorError: no working C++ compiler)" in step["compile_why"]
    a, b = eager.model.state_dict(), res.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)   # the eager fallback is the eager run
    with pytest.raises(RuntimeError, match="InductorError"):  # explicitly requested: the error is the user's
        train_model(m, None, _cfg(cache, compile=True), tmp_path / "explicit")
