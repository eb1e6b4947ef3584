"""Table 1 of the paper: reducing the domain gap — uniformize, + Mixup, + re-train / + fine-tune."""
from __future__ import annotations

from .cifar_lt import REUSE, lt_specs, setup  # noqa: F401  (REUSE, setup: read by the driver)
from .common import Context, compare, fmt, top1, verdict

TITLE = "Table 1 — reducing the domain gap (Mixup, re-train, fine-tune)"
# CIFAR-100-LT, IF 100 column
PAPER = {"nomix_no_modifier": 52.41, "nomix": 53.54, "mixup": 55.45, "retrain": 57.31, "finetune": 58.59}
RUNS = ["synaug_nomix", "synaug_retrain", "synaug"]


def specs(scale: str) -> dict[str, dict]:
    return {k: v for k, v in lt_specs(scale).items() if k in RUNS}


def runs(scale: str) -> list[str]:
    return list(RUNS)


def analyse(runners, ctx: Context) -> tuple[list[str], float]:
    rows = {"nomix": [], "mixup": [], "retrain": [], "finetune": []}
    for r in runners:
        rows["nomix"].append(top1(r.run("synaug_nomix")))
        s_rt = r.run("synaug_retrain")
        rows["mixup"].append(top1(s_rt, "trained"))
        rows["retrain"].append(top1(s_rt, "finetuned"))
        rows["finetune"].append(top1(r.run("synaug"), "finetuned"))
    P = PAPER
    md = ["| row | Mixup | re-train | fine-tune | top-1 here (%) | paper (%) |", "|---|---|---|---|---|---|",
          f"| (b) uniformized with SD 1.4 images | | | | {fmt(rows['nomix'])} | {P['nomix']:.2f} "
          f"((a) without modifiers: {P['nomix_no_modifier']:.2f}) |",
          f"| (c) + Mixup | ✓ | | | {fmt(rows['mixup'])} | {P['mixup']:.2f} |",
          f"| (d) + re-train | ✓ | ✓ | | {fmt(rows['retrain'])} | {P['retrain']:.2f} |",
          f"| (e) + fine-tune (SYNAuG) | ✓ | | ✓ | {fmt(rows['finetune'])} | {P['finetune']:.2f} |", "",
          "Synthetic rows: Stable Diffusion 1.4 images of the CIFAR-10 classes (CIFAKE). Their prompts are "
          "unknown, so the Modifier column (row a vs b) cannot be varied here. Rows (c)–(e) share one trained "
          "model; only the last layer differs.", ""]
    checks = [("Mixup helps", compare("(b)", rows["nomix"], "(c)", rows["mixup"], "top-1")),
              ("Fine-tuning the last layer helps", compare("(c)", rows["mixup"], "(e)", rows["finetune"], "top-1")),
              ("Re-training the last layer helps", compare("(c)", rows["mixup"], "(d)", rows["retrain"], "top-1")),
              ("Fine-tuning beats re-training", compare("(d)", rows["retrain"], "(e)", rows["finetune"], "top-1"))]
    md += [f"- {title}: {verdict(h)} — {txt}." for title, (h, txt) in checks]
    return md, 0.0
