"""Fig. 3 of the paper: the domain gap between real CIFAR-10 and Stable Diffusion 1.4 images.

(a) a linear probe real vs SD 1.4 on the frozen features of a model trained on real data only,
beside a real-vs-real control; (b) a 2-D PCA of real and SD features of two classes for models
trained on real + SD images without and with Mixup, with the probe repeated on each of them.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .cifar_lt import balanced_specs, lt_specs, setup  # noqa: F401  (setup: docs/results.md)
from .common import Context, cached_json, fmt, mean_std, save_figure, verdict

TITLE = "Fig. 3 — domain gap between real CIFAR-10 and Stable Diffusion 1.4 images"
PAPER = 74.16
N_PROBE = {"small": 2500, "tiny": 100}
N_MAP = {"small": 300, "tiny": 20}          # images per (domain, class) in the Fig. 3b plot
MAP_RUNS = {"without Mixup": "synaug_nomix", "with Mixup": "synaug_retrain"}


def specs(scale: str) -> dict[str, dict]:
    lt = lt_specs(scale)
    return {"real_balanced": balanced_specs(scale)["real_balanced"], **{n: lt[n] for n in MAP_RUNS.values()}}


def runs(scale: str) -> list[str]:
    return ["real_balanced", *MAP_RUNS.values()]


def _sd_unused(run_dir: Path):
    """The SD 1.4 images a run did not train on (its synthetic rows record their source file)."""
    from ..data import load_dataset
    from ..manifest import Manifest

    sd = load_dataset("shared-sd14")
    used_file = run_dir / "synthetic" / "synthetic.parquet"
    if used_file.is_file():
        used = Manifest.read(used_file).df
        if "source_file" in used.columns:
            names = {str(Path(p).relative_to(sd.roots["synthetic"])) if Path(p).is_absolute() else p
                     for p in used["source_file"]}
            sd = sd.select(~sd.df["path"].isin(names).to_numpy())
    return sd


def analyse(runners, ctx: Context) -> tuple[list[str], float]:
    n, n_map = N_PROBE[ctx.scale], N_MAP[ctx.scale]
    probe, control, dists, secs, n_test = [], [], [], 0.0, 0
    for r in runners:
        out = _probe_real_only(r, n)
        secs += out["seconds"]
        probe.append(100 * out["result"]["synthetic"]["accuracy"])
        control.append(100 * out["result"]["control"]["accuracy"])
        n_test = out["result"]["synthetic"]["n_test"]
        per_model, s = _probe_mixed(r, n, n_map)
        secs += s
        dists.append(per_model)
    map_probe = {label: [100 * pm[label]["probe"] for pm in dists] for label in MAP_RUNS}
    se = 100 * 0.5 / math.sqrt(max(n_test, 1))
    path = ctx.results_dir / "fig3b_features.png"
    _plot(dists[0], path, ctx.seeds[0])
    md = _table(probe, control, map_probe, n, n_test, se)
    md += _verdicts(probe, control, map_probe, dists, se, ctx.seeds[0])
    md += ["", f"![Fig. 3b: PCA of real and SD 1.4 features, seed {ctx.seeds[0]}]({path.name})"]
    return md, secs


def _probe_real_only(r, n: int) -> dict:
    """Fig. 3a: the probe (and its real-vs-real control) on the balanced real-only model (cached)."""
    from ..data import load_dataset
    from ..manifest import Manifest
    from ..train import load_checkpoint
    from .probe import domain_probe

    d = r.dir / "real_balanced"
    r.run("real_balanced")
    ckpt = d / "train" / "model.safetensors"
    want = {"n_per_domain": n, "seed": r.seed, "checkpoint_mtime": ckpt.stat().st_mtime_ns, "synthetic": "shared-sd14"}
    return cached_json(r.dir / "probe.json", want, lambda: domain_probe(
        load_checkpoint(ckpt), Manifest.read(d / "data" / "heldout.parquet"), load_dataset("shared-sd14"),
        n_per_domain=n, seed=r.seed, split="train"))


def _probe_mixed(r, n: int, n_map: int) -> tuple[dict, float]:
    """Fig. 3b: per model trained on real + SD images (without / with Mixup) its probe, centroid
    distances and PCA of two classes (cached per run); and the seconds they took."""
    from ..manifest import Manifest
    from ..train import load_checkpoint
    from .probe import centroid_distances, class_domain_features, domain_probe

    per_model, secs = {}, 0.0
    for label, name in MAP_RUNS.items():
        r.run(name)
        rd = r.dir / name
        ck = rd / "train" / "model.safetensors"
        heldout = Manifest.read(rd / "data" / "heldout.parquet")
        classes = heldout.classes[-2:]  # the two rarest classes of the long tail: the most SD images

        def compute(ck=ck, rd=rd, heldout=heldout, classes=classes):
            model = load_checkpoint(ck)
            unused = _sd_unused(rd)
            pr = domain_probe(model, heldout, unused, n_per_domain=n, seed=r.seed, split="train", control=False)
            feats = class_domain_features(model, heldout, unused, classes, n_map, seed=r.seed)
            return {"probe": pr["synthetic"]["accuracy"], "classes": classes,
                    "distances": centroid_distances(feats),
                    "pca": _pca({f"{k[0]}|{k[1]}": v for k, v in feats.items()})}

        want = {"n": n, "n_map": n_map, "seed": r.seed, "checkpoint_mtime": ck.stat().st_mtime_ns, "v": 1}
        o = cached_json(r.dir / f"fig3b_{name}.json", want, compute)
        secs += o["seconds"]
        per_model[label] = o["result"]
    return per_model, secs


def _table(probe, control, map_probe, n: int, n_test: int, se: float) -> list[str]:
    md = ["| probe (one linear layer on frozen features) | accuracy here (%) | paper (%) |", "|---|---|---|",
          f"| (a) real CIFAR-10 vs Stable Diffusion 1.4, model trained on real images only | {fmt(probe)} | {PAPER:.2f} |",
          f"| (a) control: real vs real | {fmt(control)} | – (50 = no gap) |"]
    md += [f"| (b) real vs SD 1.4, model trained on real + SD images {label} | {fmt(map_probe[label])} | – |"
           for label in MAP_RUNS]
    return md + ["", f"(a) Features: ResNet-32 trained on balanced real CIFAR-10 only (the Fig. 2 no-replacement run). "
                 f"{n} images per domain: real ones from the held-out CIFAR-10 training images (never trained on), SD 1.4 "
                 f"ones from CIFAKE; half of the probe data fits the probe and {n_test} images score it; one standard "
                 f"error of a 50 % probe is {se:.2f} points. (b) the SYNAuG models of Table 1 (b) and (c), probed on SD "
                 "images they did not train on.", ""]


def _verdicts(probe, control, map_probe, dists, se: float, seed0: int) -> list[str]:
    m_s, m_c = mean_std(probe)[0], mean_std(control)[0]
    md = [f"- The probe separates real from SD 1.4 features (> 50 %): {verdict(m_s - 50.0 > 2 * se)} — "
          f"{m_s:.2f} % vs 50 % ({(m_s - 50) / se:+.1f} standard errors; paper 74.16 %).",
          f"- The control stays near chance: {'yes' if abs(m_c - 50.0) <= 2 * se + 1.0 else '**no**'} — "
          f"{m_c:.2f} % ({(m_c - 50) / se:+.1f} standard errors)."]
    lo, hi = map_probe["with Mixup"], map_probe["without Mixup"]
    d = [a - b for a, b in zip(hi, lo)]
    holds = "yes" if all(x > 0 for x in d) else ("on average" if np.mean(d) > 0 else "no")
    md.append(f"- Mixup makes SD features harder to tell from real ones (lower probe accuracy): {verdict(holds)} — "
              f"without − with Mixup = {np.mean(d):+.2f} points ({sum(x > 0 for x in d)}/{len(d)} seeds positive).")
    c1, c2 = dists[0]["without Mixup"]["classes"]
    near = [pm["without Mixup"]["distances"][f"synthetic {c1} ~ synthetic {c2}"]
            < pm["without Mixup"]["distances"][f"real {c2} ~ synthetic {c2}"] for pm in dists]
    dd0 = dists[0]["without Mixup"]["distances"]
    md.append(f"- Paper, Fig. 3b: \"features of Syn C2 are closer to Syn C1 than Real C2\" (C1 = {c1}, C2 = {c2}, "
              f"model without Mixup): {verdict('yes' if all(near) else 'on average' if sum(near) * 2 > len(near) else 'no')}"
              f" — {sum(near)}/{len(near)} seeds; seed {seed0}: centroid distance Syn {c1} ~ Syn {c2} = "
              f"{dd0[f'synthetic {c1} ~ synthetic {c2}']:.2f}, Real {c2} ~ Syn {c2} = "
              f"{dd0[f'real {c2} ~ synthetic {c2}']:.2f} (units: mean within-set spread).")
    return md


def _pca(feats: dict[str, np.ndarray]) -> dict[str, list]:
    """2-D PCA (scikit-learn) fitted on all sets together; the coordinates of each set."""
    from sklearn.decomposition import PCA

    keys = list(feats)
    X = np.concatenate([feats[k] for k in keys])
    Z = PCA(n_components=2, random_state=0).fit_transform(X)
    out, i = {}, 0
    for k in keys:
        out[k] = Z[i:i + len(feats[k])].round(4).tolist()
        i += len(feats[k])
    return out


def _plot(per_model: dict, path: Path, seed: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(per_model), figsize=(4.2 * len(per_model), 3.8), squeeze=False)
    style = {"real": ("o", 0.5), "synthetic": ("^", 0.5)}
    colours = ["#4c72b0", "#dd8452"]
    for ax, (label, res) in zip(axes[0], per_model.items()):
        for key, pts in res["pca"].items():
            domain, cls = key.split("|")
            m, a = style[domain]
            pts = np.asarray(pts)
            ax.scatter(pts[:, 0], pts[:, 1], s=8, marker=m, alpha=a,
                       c=colours[res["classes"].index(cls)], label=f"{'Real' if domain == 'real' else 'SD 1.4'} {cls}")
        ax.set_title(f"trained {label}: probe {100 * res['probe']:.1f} %", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7, markerscale=1.5)
    fig.suptitle(f"PCA of frozen features, real CIFAR-10 vs Stable Diffusion 1.4 (seed {seed})", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
