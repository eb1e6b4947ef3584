"""Fig. 2 of the paper: replacing real images by Stable Diffusion 1.4 images on a balanced set,
class-wise (all images of k classes) or ratio-wise (a share r of every class)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .cifar_lt import FIG2, balanced_specs, setup  # noqa: F401  (setup: docs/results.md)
from .common import Context, fit_shapes, fmt, mean_std, save_figure, top1, verdict

SEEDS = (0, 1, 2, 3, 4)  # issue 18: five seeds for the CIFAR-10 tables with SD 1.4 images
TITLE = "Fig. 2 — replacing real images by Stable Diffusion 1.4 images on a balanced set"
PAPER = {"class_half_real": 43.96, "ratio_1pct_real": 41.11}


def specs(scale: str) -> dict[str, dict]:
    return balanced_specs(scale)


def runs(scale: str) -> list[str]:
    return list(balanced_specs(scale))


def analyse(runners, ctx: Context) -> tuple[list[str], float]:
    pts_def = FIG2[ctx.scale]
    curves = {"class": [("real_balanced", 0)] + [(f"replace_class_k{k}", k) for k in pts_def["k"]],
              "ratio": [("real_balanced", 0.0)] + [(f"replace_ratio_{r:g}", r) for r in pts_def["r"]]}
    table, fits, pts = [], {}, {}
    for kind, names in curves.items():
        fs, accs = [], []
        for name, param in names:
            per_seed, frac, n_classes = [], None, None
            for r in runners:
                s = r.run(name)
                per_seed.append(top1(s))
                frac = 1.0 - s["synthetic"] / sum(s["train_counts_after"])
                n_classes = len(s["train_counts_after"])
            fs.append(frac)
            accs.append(mean_std(per_seed)[0])
            what = ("no replacement" if name == "real_balanced" else
                    f"k = {param} of {n_classes} classes" if kind == "class" else f"r = {param:g}")
            paper = ""
            if kind == "class" and abs(frac - 0.5) < 1e-9:
                paper = f"{PAPER['class_half_real']:.2f} (50 % real)"
            if kind == "ratio" and name != "real_balanced" and param == max(pts_def["r"]):
                paper = f"{PAPER['ratio_1pct_real']:.2f} (1 % real)"
            table.append(f"| {'(a) class-wise' if kind == 'class' else '(b) ratio-wise'} | {what} | "
                         f"{100 * frac:.0f} % | {fmt(per_seed)} | {paper or '–'} |")
        pts[kind] = (np.asarray(fs), np.asarray(accs))
        fits[kind] = fit_shapes(np.asarray(fs), np.asarray(accs)) if len(fs) >= 3 else None
    md = ["| setting | replaced | real share of the training set | top-1 here (%) | paper (%) |",
          "|---|---|---|---|---|", *table, "",
          "Replacement images: Stable Diffusion 1.4 images of the same classes (CIFAKE). As in the paper: no Mixup, "
          "no last-layer step. The paper plots whole curves (CIFAR-100, 500 per class); the text quotes two points, "
          "shown next to the closest setting here.", "",
          "Shape fits (least squares on the seed means, x = real share f): linear a + b·f vs logarithmic a + b·ln f.", "",
          "| setting | R² linear | R² log | better fit |", "|---|---|---|---|"]
    for kind in ("class", "ratio"):
        f = fits[kind]
        md.append(f"| {kind}-wise | – | – | too few points (needs 3) |" if f is None else
                  f"| {kind}-wise | {f['linear']['r2']:.3f} | {f['log']['r2']:.3f} | {f['better']} |")
    md.append("")
    for kind, expect, label in (("class", "linear", "Class-wise replacement declines ~linearly"),
                                ("ratio", "log", "Ratio-wise replacement declines ~logarithmically")):
        f = fits[kind]
        if f is None:
            md.append(f"- {label}: not tested (fewer than 3 points at this scale).")
            continue
        decl = f["linear"]["b"] > 0  # accuracy rises with the real share = declines with replacement
        holds = decl and f["better"] == expect
        md.append(f"- {label}: {verdict(holds)} — accuracy "
                  f"{'declines' if decl else 'does not decline'} as real images are replaced "
                  f"(slope {f['linear']['b']:+.1f} points per unit real share); the {f['better']} shape fits better "
                  f"(R² {f['linear']['r2']:.3f} linear vs {f['log']['r2']:.3f} log).")
    fc, ac = pts["class"]
    fr, ar = pts["ratio"]
    i_half, i_low = int(np.argmin(np.abs(fc - 0.5))), int(np.argmin(fr))
    ok = ar[i_low] >= ac[i_half] - 3.0
    md.append(f"- A few real images per class go a long way (paper: 41.11 % with 1 % real, ratio-wise, vs 43.96 % with "
              f"50 % real, class-wise): here {ar[i_low]:.2f} % with {100 * fr[i_low]:.0f} % real (ratio-wise) vs "
              f"{ac[i_half]:.2f} % with {100 * fc[i_half]:.0f} % real (class-wise) — "
              + ("**comparable or better (within 3 points), as in the paper**." if ok else
                 "**clearly worse, unlike the paper**."))
    path = ctx.results_dir / "fig2_replacement.png"
    plot(pts, fits, path)
    md += ["", f"![Fig. 2 at CPU scale]({path.name})"]
    return md, 0.0


def plot(pts: dict, fits: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, kind, title in zip(axes, ("class", "ratio"), ("(a) class-wise", "(b) ratio-wise")):
        f, a = pts[kind]
        ax.plot(100 * f, a, "ko")
        if fits[kind] is not None:
            xs = np.linspace(max(f.min(), 1e-3), 1, 100)
            ax.plot(100 * xs, fits[kind]["linear"]["a"] + fits[kind]["linear"]["b"] * xs, "b-", label="linear fit")
            ax.plot(100 * xs, fits[kind]["log"]["a"] + fits[kind]["log"]["b"] * np.log(xs), "r--", label="log fit")
            ax.legend(fontsize=7)
        if kind == "ratio":
            ax.set_xscale("log")
        ax.set_xlabel("real share of training images (%)" + (", log scale" if kind == "ratio" else ""))
        ax.set_ylabel("top-1 (%)")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
