"""Table 1 of the paper: reducing the domain gap — uniformize, + Mixup, + re-train / + fine-tune."""
from __future__ import annotations

import numpy as np

from .cifar_lt import REUSE, lt_specs, setup  # noqa: F401  (REUSE, setup: read by the driver)
from .common import Context, compare, fmt, top1, verdict

SEEDS = (0, 1, 2, 3, 4)  # issue 18: five seeds for the CIFAR-10 tables with SD 1.4 images
TITLE = "Table 1 — reducing the domain gap (Mixup, re-train, fine-tune)"
# CIFAR-100-LT, IF 100 column
PAPER = {"nomix_no_modifier": 52.41, "nomix": 53.54, "mixup": 55.45, "retrain": 57.31, "finetune": 58.59}
RUNS = ["synaug_nomix", "synaug_retrain", "synaug"]
BUDGETS = ("",)  # the config's epochs; experiment ``table1_long`` adds "_long" (LONG_EPOCHS)


def specs(scale: str, budgets=BUDGETS) -> dict[str, dict]:
    names = runs(scale, budgets)
    return {k: v for k, v in lt_specs(scale).items() if k in names}


def runs(scale: str, budgets=BUDGETS) -> list[str]:
    return [r + b for b in budgets for r in RUNS]


def _rows(runners, suffix: str) -> dict[str, list[float]]:
    rows = {"nomix": [], "mixup": [], "retrain": [], "finetune": []}
    for r in runners:
        rows["nomix"].append(top1(r.run("synaug_nomix" + suffix)))
        s_rt = r.run("synaug_retrain" + suffix)
        rows["mixup"].append(top1(s_rt, "trained"))
        rows["retrain"].append(top1(s_rt, "finetuned"))
        rows["finetune"].append(top1(r.run("synaug" + suffix), "finetuned"))
    return rows


def analyse(runners, ctx: Context, budgets=BUDGETS) -> tuple[list[str], float]:
    specs_ = lt_specs(ctx.scale)
    epochs = {b: specs_["synaug" + b]["train"]["epochs"] for b in budgets}
    rows = {b: _rows(runners, b) for b in budgets}
    P = PAPER
    cols = " | ".join(f"top-1 here, {epochs[b]} epochs (%)" for b in budgets)

    def cells(key):
        return " | ".join(fmt(rows[b][key]) for b in budgets)

    md = [f"| row | Mixup | re-train | fine-tune | {cols} | paper (%) |",
          "|---|---|---|---|" + "---|" * len(budgets) + "---|",
          f"| (b) uniformized with SD 1.4 images | | | | {cells('nomix')} | {P['nomix']:.2f} "
          f"((a) without modifiers: {P['nomix_no_modifier']:.2f}) |",
          f"| (c) + Mixup | ✓ | | | {cells('mixup')} | {P['mixup']:.2f} |",
          f"| (d) + re-train | ✓ | ✓ | | {cells('retrain')} | {P['retrain']:.2f} |",
          f"| (e) + fine-tune (SYNAuG) | ✓ | | ✓ | {cells('finetune')} | {P['finetune']:.2f} |",
          "", "Synthetic rows: Stable Diffusion 1.4 images of the CIFAR-10 classes (CIFAKE). Their prompts are "
          "unknown, so the Modifier column (row a vs b) cannot be varied here. Rows (c)–(e) share one trained "
          "model; only the last layer differs. Paper: 200 epochs."
          + ("" if len(budgets) == 1 else " The table is run with each training budget (schedule milestones at the "
             "same fractions), so that a finding is not decided by the budget alone."), ""]
    for b, e in epochs.items():
        rw = rows[b]
        checks = [("Mixup helps", compare("(b)", rw["nomix"], "(c)", rw["mixup"], "top-1")),
                  ("Fine-tuning the last layer helps", compare("(c)", rw["mixup"], "(e)", rw["finetune"], "top-1")),
                  ("Re-training the last layer helps", compare("(c)", rw["mixup"], "(d)", rw["retrain"], "top-1")),
                  ("Fine-tuning beats re-training", compare("(d)", rw["retrain"], "(e)", rw["finetune"], "top-1")),
                  ("SYNAuG (e) beats uniformizing alone (b)", compare("(b)", rw["nomix"], "(e)", rw["finetune"],
                                                                      "top-1"))]
        md += [f"- {e} epochs — {title}: {verdict(h)} — {txt}." for title, (h, txt) in checks]
    if len(budgets) > 1:
        md += budget_lines(*(epochs[b] for b in budgets[:2]), *(rows[b] for b in budgets[:2]))
    return md, 0.0


def budget_lines(e0: int, e1: int, r0: dict, r1: dict) -> list[str]:
    """Is Mixup's harm a budget effect? Its paired gain ((c) − (b)) at ``e1`` epochs against ``e0``.

    Unlike the per-budget checks, "grows" needs the mean change beyond one standard error of the
    paired changes (std / sqrt(seeds)), not only above zero: a change inside the noise is no change.
    """
    g0 = [c - n for n, c in zip(r0["nomix"], r0["mixup"])]
    g1 = [c - n for n, c in zip(r1["nomix"], r1["mixup"])]
    holds, txt = compare(f"Mixup gain at {e0} epochs", g0, f"Mixup gain at {e1} epochs", g1, "", beyond_se=True)
    md = [f"- Mixup's effect grows with the training budget: {verdict(holds)} — {txt}."]
    if np.mean(g0) < 0:
        stops = np.mean(g1) >= 0 and holds != "no"
        md.append(f"- Mixup's harm at {e0} epochs is a budget effect (it grows and no longer hurts at {e1} epochs): "
                  f"{verdict(stops)} — Mixup gain {np.mean(g0):+.2f} at {e0} epochs, {np.mean(g1):+.2f} at {e1} "
                  f"epochs ({sum(x > 0 for x in g1)}/{len(g1)} seeds positive at {e1}).")
    return md
