"""Does bf16 move accuracy? Two of the demo's runs (CE, SD 1.4 images) in fp32 and in bf16, paired by seed.

``amp: auto`` (the default since issue 18) would train in bf16 where the device has bf16 units. It
is accepted as that default only if, at the demo's configuration, the paired difference bf16 − fp32
in top-1 and few-shot accuracy is within one standard error of the paired differences, or within
0.5 points. The bf16 rows use real bf16 autocast where this machine has bf16 units, and otherwise
``amp: bf16-emulated`` (fp32 kernels with every tensor rounded to bf16: :mod:`synaug.train.emulate`),
as the table says. Not run by default (about 1 h on 2 cores; 32 min with real bf16):
``reproduce_cpu.py --only precision``. On a CPU with bf16 units (2026-12-07) bf16 was **not**
accepted, so ``amp: auto`` keeps fp32 on CPUs (:data:`synaug.train.precision.CPU_BF16_ACCURACY`).
"""
from __future__ import annotations

import math

from .common import Context, check_scale, fmt, mean_std, shot, top1

TITLE = "bf16 against fp32 (amp: auto) at the demo's configuration"
SEEDS = (0, 1, 2)
# the long-tailed real run and the run with the SD 1.4 images; the held-out-real pool run (the same
# training on real images) is left out to keep the check within one CPU session
VARIANTS = ("ce", "synaug-sd14")
TOLERANCE = 0.5  # points; or one standard error of the paired differences


def bf16_mode() -> str:
    """``bf16`` where this CPU has bf16 units, else ``bf16-emulated``."""
    from ..train.precision import cpu_bf16_support

    return "bf16" if cpu_bf16_support()[0] else "bf16-emulated"


def _with_precision(raw: dict, amp: str) -> dict:
    import copy

    out = copy.deepcopy(raw)
    out["train"].update(amp=amp, compile=False)
    if out.get("finetune") is not None:
        out["finetune"]["amp"] = amp
    return out


def demo_specs(scale: str) -> dict[str, dict]:
    """The demo's runs (``ce``, ``synaug-sd14``, ``synaug-pool``) as ``synaug demo --epochs 22 [--quick]``
    makes them (22: the demo's default when this check was made, :data:`~synaug.demo.REFERENCE_EPOCHS`)."""
    from ..demo import REFERENCE_EPOCHS, variants

    check_scale(scale)
    quick = scale == "tiny"
    base = variants(1 if quick else REFERENCE_EPOCHS, quick, 0)
    if quick:
        for raw in base.values():
            raw["train"]["progress"] = False
    return base


def fp32_specs(scale: str, variants=VARIANTS) -> dict[str, dict]:
    """``demo-<variant>-fp32``: a demo run in fp32, compile off (shared with the gap experiment)."""
    base = demo_specs(scale)
    return {f"demo-{v}-fp32": _with_precision(base[v], "off") for v in variants}


def specs(scale: str) -> dict[str, dict]:
    base, out = demo_specs(scale), {}
    for v in VARIANTS:
        out[f"demo-{v}-fp32"] = _with_precision(base[v], "off")
        out[f"demo-{v}-bf16"] = _with_precision(base[v], bf16_mode())
    return out


def runs(scale: str) -> list[str]:
    return list(specs(scale))


def setup(scale: str) -> list[str]:
    return [f"- bf16 check ({TITLE}): the demo's CE and SD 1.4 runs (CIFAR-10-LT IF 100, head 400, ResNet-32, 22 epochs, "
            "full 10,000-image test set) with `amp: off` (fp32, the old default) and in "
            f"bf16 ({_bf16_label()}), compile off in both."]


def _bf16_label() -> str:
    return ("real bf16 autocast on this CPU's bf16 units" if bf16_mode() == "bf16" else
            "`amp: bf16-emulated`: this CPU has no bf16 units, so bf16 numerics are emulated with fp32 kernels, "
            "every tensor rounded to bf16 (synaug.train.emulate)")


def _within(diffs: list[float]) -> tuple[bool, float, float]:
    m, s = mean_std(diffs)
    se = s / math.sqrt(len(diffs)) if not math.isnan(s) else float("nan")
    ok = abs(m) <= TOLERANCE or (not math.isnan(se) and abs(m) <= se)
    return ok, m, se


def analyse(runners, ctx: Context) -> tuple[list[str], float]:
    md = [f"bf16 rows: {_bf16_label()}. Final stage of each run (fine-tuned for the SYNAuG runs). Paired "
          "differences bf16 − fp32 per seed; accepted if |mean| <= one standard error (SE = std / √n) or "
          f"<= {TOLERANCE} points.", "",
          "| run | metric | fp32 (%) | bf16 (%) | bf16 − fp32 (points) | SE | within tolerance |",
          "|---|---|---|---|---|---|---|"]
    verdicts = []
    for v in VARIANTS:
        for metric, get in (("top-1", top1), ("few-shot", lambda s: shot(s, "few"))):
            a = [get(r.run(f"demo-{v}-fp32")) for r in runners]
            b = [get(r.run(f"demo-{v}-bf16")) for r in runners]
            d = [y - x for x, y in zip(a, b)]
            ok, m, se = _within(d)
            verdicts.append(ok)
            md.append(f"| {v} | {metric} | {fmt(a)} | {fmt(b)} | {fmt(d)} | {se:.2f} | {'yes' if ok else 'NO'} |")
    accept = all(verdicts)
    md += ["", f"- bf16 as the default where the device has bf16 units: **{'accepted' if accept else 'NOT accepted'}** "
           f"— {sum(verdicts)}/{len(verdicts)} paired differences within tolerance."
           + ("" if accept else " So `amp: auto` keeps fp32 on CPUs (`synaug.train.precision.CPU_BF16_ACCURACY`); "
                             "`amp: bf16` is the opt-in for the speed.")]
    return md, 0.0
