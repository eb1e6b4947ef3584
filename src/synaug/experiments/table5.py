"""Table 5 of the paper: where the uniformizing images come from, and Mixup / CutMix."""
from __future__ import annotations

from .cifar_lt import REUSE, lt_specs, setup  # noqa: F401  (REUSE, setup: read by the driver)
from .common import Context, compare, fmt, fmt_paper, mean_std, top1, verdict

SEEDS = (0, 1, 2, 3, 4)  # issue 18: five seeds for the CIFAR-10 tables with SD 1.4 images
TITLE = "Table 5 — uniformization sources (SD 1.4 vs web-crawled stand-in) and Mixup / CutMix"
PAPER = {"ce": 37.96, "mixup_lt": 36.21, "cutmix_lt": 37.91, "web": 54.06, "synaug": 58.59}
METHODS = [("ce", "CE", "N/A"), ("mixup_lt", "Mixup", "N/A"), ("cutmix_lt", "CutMix", "N/A"),
           ("web", "Web-crawled images → held-out real CIFAR-10 pool", "Real"),
           ("synaug", "SYNAuG (Stable Diffusion 1.4 images)", "Syn.")]
# after uniformization with SD images, before the last-layer step (trained stage)
AUG = [("synaug_nomix", "neither"), ("synaug_retrain", "Mixup"), ("synaug_cutmix", "CutMix")]


def specs(scale: str) -> dict[str, dict]:
    names = runs(scale)
    return {k: v for k, v in lt_specs(scale).items() if k in names}


def runs(scale: str) -> list[str]:
    return [m for m, _, _ in METHODS] + [m for m, _ in AUG]


def analyse(runners, ctx: Context) -> tuple[list[str], float]:
    vals = {m: [top1(r.run(m)) for r in runners] for m, _, _ in METHODS}
    aug = {m: [top1(r.run(m), "trained") for r in runners] for m, _ in AUG}
    aug_ft = {"synaug_cutmix": [top1(r.run("synaug_cutmix"), "finetuned") for r in runners]}
    md = ["| method | additional data | top-1 here (%) | paper (%) |", "|---|---|---|---|"]
    for m, label, kind in METHODS:
        md.append(f"| {label} | {kind} | {fmt(vals[m])} | {fmt_paper(PAPER[m])} |")
    md += ["", "Intra-/inter-class image translation and class-distribution fitting need a diffusion model to run "
           "(configs/table5-cifar100lt-*.yaml); they are not run here. Web and SYNAuG rows include Mixup and "
           "last-layer fine-tuning, as in the paper; the Mixup / CutMix rows are trained on the long-tailed data only.",
           "", "Augmentation after uniformization with the SD 1.4 images (trained model, before the last-layer step; "
           "not in the paper's Table 5 — its Table 3c asks the same question on faces):", "",
           "| augmentation | top-1 here (%) |", "|---|---|"]
    md += [f"| {label} | {fmt(aug[m])} |" for m, label in AUG]
    md += [f"| CutMix, then fine-tuned | {fmt(aug_ft['synaug_cutmix'])} |", ""]
    h_web = compare("CE", vals["ce"], "web (held-out real)", vals["web"], "top-1")
    h_syn = compare("CE", vals["ce"], "SYNAuG (SD 1.4)", vals["synaug"], "top-1")
    h_sw = compare("web (held-out real)", vals["web"], "SYNAuG (SD 1.4)", vals["synaug"], "top-1")
    names = {"ce": "CE", "mixup_lt": "Mixup", "cutmix_lt": "CutMix"}
    order = sorted(names, key=lambda m: mean_std(vals[m])[0])
    paper_order = sorted(names, key=lambda m: PAPER[m])
    h_mix = compare("CE", vals["ce"], "Mixup", vals["mixup_lt"], "top-1")
    h_cut = compare("CE", vals["ce"], "CutMix", vals["cutmix_lt"], "top-1")
    h_am = compare("neither", aug["synaug_nomix"], "Mixup", aug["synaug_retrain"], "top-1 (trained stage)")
    h_ac = compare("neither", aug["synaug_nomix"], "CutMix", aug["synaug_cutmix"], "top-1 (trained stage)")
    md += [f"- Web-crawled stand-in (held-out real images) beats CE: {verdict(h_web[0])} — {h_web[1]}.",
           f"- SYNAuG with SD 1.4 images beats CE: {verdict(h_syn[0])} — {h_syn[1]}.",
           f"- SYNAuG with generated images beats web images (paper: 58.59 vs 54.06): {verdict(h_sw[0])} — "
           f"{h_sw[1]}. Here the \"web\" images are real CIFAR-10 images from the test distribution itself, "
           "a stronger baseline than crawled web images.",
           f"- Mixup / CutMix vs CE on the long-tailed data. Paper: Mixup < CE (−1.75) and CutMix ≈ CE (−0.05), "
           f"order low→high {' < '.join(names[m] for m in paper_order)}. Here: {h_mix[1]}; {h_cut[1]}; "
           f"order low→high {' < '.join(names[m] for m in order)} — "
           + ("**same order as the paper**." if order == paper_order else "**a different order from the paper**."),
           f"- After uniformization, Mixup helps: {verdict(h_am[0])} — {h_am[1]}.",
           f"- After uniformization, CutMix helps: {verdict(h_ac[0])} — {h_ac[1]}."]
    return md, 0.0
