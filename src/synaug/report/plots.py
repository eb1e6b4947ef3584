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
                path: Path, per_class: int = 4, tile: int = 32) -> Path:
    """One row per class: ``per_class`` real images, a red line, then ``per_class`` synthetic ones.

    The images are pasted into one mosaic (``tile`` px squares) drawn as a single image: fast
    for many classes, and the line where real ends and synthetic begins is one artist
    (``gid="real-synthetic-divider"``) with "real" / "synthetic" written above the halves.
    """
    from PIL import Image

    C, gap, mid = len(classes), 2, 12
    step = tile + gap
    half = per_class * step
    mosaic = np.full((C * step + gap, 2 * half + mid + gap, 3), 255, dtype=np.uint8)
    for c in range(C):
        for side, files in ((0, real.get(c, [])), (1, synthetic.get(c, []))):
            for k, f in enumerate(files[:per_class]):
                with Image.open(f) as im:
                    a = np.asarray(im.convert("RGB").resize((tile, tile), Image.BICUBIC))
                y = gap + c * step
                x = gap + side * (half + mid) + k * step
                mosaic[y:y + tile, x:x + tile] = a
    fig, ax = plt.subplots(figsize=(2 * per_class * 0.5 + 1.6, C * 0.5 + 0.8))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_yticks([gap + c * step + tile / 2 for c in range(C)], list(classes), fontsize=7)
    ax.xaxis.tick_top()
    ax.set_xticks([half / 2, half + mid + half / 2], ["real", "synthetic"], fontsize=9, fontweight="bold")
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.axvline(half + gap / 2 + mid / 2, color="#c00000", linewidth=2, gid="real-synthetic-divider")
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


def cell_accuracy(groups: Sequence[str], classes: Sequence[str], acc: dict[str, np.ndarray], path: Path,
                  title: str = "test accuracy per (group, class) cell") -> Path:
    """Bars of accuracy per (group, class) cell for each named model: ``acc[name]`` has shape
    (G, C) (nan where a cell has no test rows); one cluster per group, one bar per class x model."""
    names = list(acc)
    G, C = len(groups), len(classes)
    k = max(C * len(names), 1)
    w = 0.8 / k
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * G * k + 2), 3.6))
    x = np.arange(G)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(names):
        a = np.asarray(acc[name], dtype=float)
        for c in range(C):
            j = i * C + c
            ax.bar(x + (j - (k - 1) / 2) * w, 100 * a[:, c], w, color=colours[c % len(colours)],
                   alpha=1.0 - 0.45 * i / max(len(names) - 1, 1), label=f"{classes[c]} ({name})")
    ax.set_xticks(x, list(groups))
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=min(len(names), 3))
    return _save(fig, path)
