"""Fig. 5 of the paper: how class and group imbalance tilt a linear classifier.

Four 2-D Gaussians with the same covariance, one per (class, group) cell: the class moves
the mean along x, the group along y. A fair classifier ignores y, i.e. its boundary is
vertical. We fit logistic regression on cells of different sizes and report the boundary's
angle from vertical and the fairness gaps on a balanced test set; then we uniformize the
most skewed scenario with samples from a slightly shifted "generator" (SYNAuG).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..metrics import demographic_parity, equal_opportunity, equalized_odds

MEANS = {(0, 0): (-1.0, -1.0), (1, 0): (1.0, -1.0), (0, 1): (-1.0, 1.0), (1, 1): (1.0, 1.0)}
SCENARIOS = {
    # n[(class, group)]
    "balanced": {(0, 0): 500, (1, 0): 500, (0, 1): 500, (1, 1): 500},
    "group imbalance": {(0, 0): 500, (1, 0): 500, (0, 1): 50, (1, 1): 50},
    "class imbalance": {(0, 0): 500, (1, 0): 50, (0, 1): 500, (1, 1): 50},
    "class + group imbalance": {(0, 0): 500, (1, 0): 500, (0, 1): 500, (1, 1): 50},
}


def sample(counts: dict, rng: np.random.RandomState, std: float = 1.0, shift: float = 0.0):
    xs, ys, gs = [], [], []
    for (c, g), n in counts.items():
        mu = np.asarray(MEANS[(c, g)]) + shift
        xs.append(rng.normal(mu, std, size=(n, 2)))
        ys.append(np.full(n, c))
        gs.append(np.full(n, g))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)


def fit_and_score(X, y, Xt, yt, gt) -> dict:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1e4, max_iter=1000).fit(X, y)
    w = clf.coef_[0]
    pred = clf.predict(Xt)
    return {"angle_deg": float(np.degrees(np.arctan2(abs(w[1]), abs(w[0])))),
            "acc": float((pred == yt).mean()),
            "dp": demographic_parity(pred, gt), "eo": equal_opportunity(yt, pred, gt),
            "ed": equalized_odds(yt, pred, gt), "w": w.tolist(), "b": float(clf.intercept_[0]),
            "model": clf}


def run(seed: int = 0, synthetic_shift: float = 0.3) -> dict:
    """Return per-scenario angle / accuracy / DP / EO / ED (and the fitted models for plotting)."""
    rng = np.random.RandomState(seed)
    Xt, yt, gt = sample({k: 2000 for k in MEANS}, rng)
    out = {}
    for name, counts in SCENARIOS.items():
        X, y, g = sample(counts, rng)
        out[name] = fit_and_score(X, y, Xt, yt, gt) | {"data": (X, y, g)}
    # SYNAuG on the most skewed scenario: fill every cell to the largest with shifted samples
    counts = SCENARIOS["class + group imbalance"]
    X, y, g = out["class + group imbalance"]["data"]
    top = max(counts.values())
    Xs, ys, gs = sample({k: top - n for k, n in counts.items() if top > n}, rng, shift=synthetic_shift)
    Xu, yu, gu = np.concatenate([X, Xs]), np.concatenate([y, ys]), np.concatenate([g, gs])
    out["class + group imbalance + SYNAuG"] = fit_and_score(Xu, yu, Xt, yt, gt) | {"data": (Xu, yu, gu)}
    return out


def plot(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    names = list(results)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.3), squeeze=False)
    colours = {(0, 0): "#4c72b0", (1, 0): "#c44e52", (0, 1): "#8fb0e0", (1, 1): "#f0a0a0"}
    for ax, name in zip(axes[0], names):
        X, y, g = results[name]["data"]
        for key, col in colours.items():
            m = (y == key[0]) & (g == key[1])
            ax.scatter(X[m, 0], X[m, 1], s=3, c=col, alpha=0.5, label=f"class {key[0]}, group {key[1]}")
        w, b = results[name]["w"], results[name]["b"]
        yy = np.linspace(-4, 4, 50)
        ax.plot(-(w[1] * yy + b) / w[0], yy, "k-", lw=2)
        ax.set_xlim(-4, 4)
        ax.set_ylim(-4, 4)
        r = results[name]
        ax.set_title(f"{name}\nangle {r['angle_deg']:.1f}°, EO {r['eo']:.3f}", fontsize=8)
    axes[0][0].legend(fontsize=6, loc="lower left")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
