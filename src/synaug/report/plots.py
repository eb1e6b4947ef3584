"""Report figures (matplotlib, Agg): histograms, sample grids, per-class accuracy bars."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..io import atomic_path  # noqa: E402

BUCKET_COLOURS = {"many": "#4c72b0", "medium": "#dd8452", "few": "#c44e52"}


def bucket(n: int) -> str:
    return "many" if n > 100 else ("medium" if n >= 20 else "few")


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def counts_before_after(classes: Sequence[str], real: np.ndarray, synthetic: np.ndarray, path: Path,
                        title: str = "training set before / after uniformization") -> Path:
    """Stacked bars per class (sorted by real count): real part, synthetic part."""
    order = np.argsort(-np.asarray(real), kind="stable")
    x = np.arange(len(order))
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(order) + 2), 3.4))
    ax.bar(x, np.asarray(real)[order], color="#4c72b0", label="real")
    ax.bar(x, np.asarray(synthetic)[order], bottom=np.asarray(real)[order], color="#55a868", alpha=0.8,
           label="synthetic")
    if len(order) <= 40:
        ax.set_xticks(x, [classes[i] for i in order], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def cell_heatmap(matrix: np.ndarray, classes: Sequence[str], groups: Sequence[str], path: Path,
                 title: str) -> Path:
    fig, ax = plt.subplots(figsize=(1.2 * len(groups) + 3, 0.35 * len(classes) + 2))
    im = ax.imshow(matrix, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(int(v)), ha="center", va="center", color="w", fontsize=7)
    fig.colorbar(im, ax=ax)
    ax.set_title(title)
    return _save(fig, path)


def _labels_overlap(fig, labels) -> bool:
    """Whether any two tick labels' boxes overlap once drawn."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(r) for t in labels if t.get_text()]
    return any(a.overlaps(b) for a, b in zip(boxes, boxes[1:]))


def fit_xticklabels(fig, ax) -> None:
    """Keep x tick labels apart: horizontal when they fit, else turned upright (90 degrees)."""
    labels = ax.get_xticklabels()
    if _labels_overlap(fig, labels):
        for t in labels:
            t.set_rotation(90)
            t.set_ha("center")
            t.set_va("top")


def per_class_accuracy(classes: Sequence[str], train_counts: np.ndarray, acc: dict[str, np.ndarray],
                       path: Path, show_counts: bool = True) -> Path:
    """Grouped bars of per-class accuracy for each named model, classes sorted by train count.

    ``acc[name][i]`` is the accuracy on ``classes[i]`` (NaN: no bar). Class names are never
    drawn on top of each other (see :func:`fit_xticklabels`).
    """
    order = np.argsort(-np.asarray(train_counts), kind="stable")
    x = np.arange(len(order))
    names = list(acc)
    w = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(6, len(order) * (0.3 + 0.15 * len(names)) + 2), 3.6))
    for k, name in enumerate(names):
        ax.bar(x + (k - (len(names) - 1) / 2) * w, 100 * np.asarray(acc[name], dtype=float)[order], w, label=name)
    if len(order) <= 40:
        ticks = [f"{classes[i]}\n({int(train_counts[i])})" if show_counts else classes[i] for i in order]
        ax.set_xticks(x, ticks, fontsize=7)
        fit_xticklabels(fig, ax)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("per-class accuracy, classes sorted by real training count"
                 + ("" if show_counts else " (first run)"))
    ax.legend(fontsize=8)
    return _save(fig, path)


def sample_grid(classes: Sequence[str], real: dict[int, list[Path]], synthetic: dict[int, list[Path]],
                path: Path, per_class: int = 4) -> Path:
    """One row per class: ``per_class`` real images, a red line, then ``per_class`` synthetic ones."""
    from matplotlib.lines import Line2D
    from PIL import Image

    C = len(classes)
    fig, axes = plt.subplots(C, 2 * per_class, figsize=(2 * per_class * 0.9 + 0.3, C * 0.95 + 0.4),
                             squeeze=False)
    for c in range(C):
        for j in range(2 * per_class):
            ax = axes[c][j]
            ax.axis("off")
            src = real if j < per_class else synthetic
            files = src.get(c, [])
            k = j % per_class
            if k < len(files):
                with Image.open(files[k]) as im:
                    ax.imshow(np.asarray(im.convert("RGB")))
            if j == 0:
                ax.set_title(classes[c], fontsize=7, loc="left")
    # where real ends and synthetic begins: a vertical line between the two halves, and headers
    left, right = axes[0][per_class - 1].get_position(), axes[0][per_class].get_position()
    bottom = axes[C - 1][0].get_position().y0
    x = (left.x1 + right.x0) / 2
    fig.add_artist(Line2D([x, x], [bottom, left.y1 + 0.02], transform=fig.transFigure, color="#c00000",
                          linewidth=2, gid="real-synthetic-divider"))
    top = left.y1 + 0.03
    fig.text((axes[0][0].get_position().x0 + left.x1) / 2, top, "real", ha="center", va="bottom",
             fontsize=9, fontweight="bold")
    fig.text((right.x0 + axes[0][2 * per_class - 1].get_position().x1) / 2, top, "synthetic", ha="center",
             va="bottom", fontsize=9, fontweight="bold", color="#c00000")
    return _save(fig, path)


def line_plot(x: Sequence[float], ys: dict[str, tuple[Sequence[float], Sequence[float]]], path: Path,
              xlabel: str, ylabel: str, title: str) -> Path:
    """Lines with error bars: ``ys[name] = (means, stds)``."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, (m, s) in ys.items():
        ax.errorbar(x, m, yerr=s, marker="o", capsize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)
