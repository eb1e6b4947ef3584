"""Fig. 5 of the paper: class vs. group imbalance on a 2-D toy (see :mod:`synaug.experiments.toy2d`)."""
from __future__ import annotations

import time

from .common import Context, compare, fmt, verdict

TITLE = "Fig. 5 — class vs. group imbalance on a 2-D toy"


def specs(scale: str) -> dict[str, dict]:
    return {}


def runs(scale: str) -> list[str]:
    return []


def analyse(runners, ctx: Context) -> tuple[list[str], float]:
    from . import toy2d

    t0 = time.perf_counter()
    per, first = {}, None
    for s in ctx.seeds:
        out = toy2d.run(seed=s)
        first = first or out
        for name, r in out.items():
            d = per.setdefault(name, {k: [] for k in ("angle_deg", "acc", "dp", "eo", "ed")})
            for k in d:
                d[k].append(r[k] * (100 if k == "acc" else 1))
    path = ctx.results_dir / "fig5_toy.png"
    toy2d.plot(first, path)
    secs = time.perf_counter() - t0
    md = ["| scenario | boundary angle from vertical (°) | accuracy (%) | DP | EO | ED |", "|---|---|---|---|---|---|"]
    for name, d in per.items():
        md.append(f"| {name} | {fmt(d['angle_deg'], 1)} | {fmt(d['acc'], 1)} | {fmt(d['dp'], 3)} | "
                  f"{fmt(d['eo'], 3)} | {fmt(d['ed'], 3)} |")
    ang = {k: v["angle_deg"] for k, v in per.items()}
    md += ["", "The paper shows this as a figure only (no numbers). 0° = vertical boundary = the classifier "
           "ignores the group (fair).", ""]
    c1 = compare("max(group imbalance, class imbalance)",
                 [max(g, c) for g, c in zip(ang["group imbalance"], ang["class imbalance"])],
                 "class + group imbalance", ang["class + group imbalance"], "of tilt", "°")
    c2 = compare("group imbalance", ang["group imbalance"], "class imbalance", ang["class imbalance"], "of tilt", "°")
    c3 = compare("balanced", ang["balanced"], "class + group imbalance", ang["class + group imbalance"], "of tilt", "°")
    c4 = compare("SYNAuG", ang["class + group imbalance + SYNAuG"], "class + group imbalance",
                 ang["class + group imbalance"], "of tilt", "°")
    md += [f"- Group imbalance together with class imbalance amplifies the unfairness (tilts more than either "
           f"alone): {verdict(c1[0])} — {c1[1]}.",
           f"- Class imbalance alone tilts the classifier more than group imbalance alone (the paper: \"class "
           f"imbalance contributes more than group imbalance\"): {verdict(c2[0])} — {c2[1]}. Note the toy's design: "
           f"its class-imbalance scenario has the same class ratio in both groups, so it moves the boundary "
           f"(accuracy column) rather than tilting it; the tilt appears when the class ratio differs between groups.",
           f"- Class + group imbalance tilts it more than balanced data: {verdict(c3[0])} — {c3[1]}.",
           f"- Uniformizing with shifted samples (SYNAuG) reduces the tilt: {verdict(c4[0])} — {c4[1]}.",
           "", f"![Fig. 5 toy, seed {ctx.seeds[0]}]({path.name})"]
    return md, secs
