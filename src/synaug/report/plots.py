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


def per_class_accuracy(classes: Sequence[str], train_counts: np.ndarray, acc: dict[str, np.ndarray],
                       path: Path) -> Path:
    """Grouped bars of per-class accuracy for each named model, classes sorted by train count."""
    order = np.argsort(-np.asarray(train_counts), kind="stable")
    x = np.arange(len(order))
    names = list(acc)
    w = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(6, 0.4 * len(order) * max(1, len(names) / 2) + 2), 3.6))
    for k, name in enumerate(names):
        ax.bar(x + (k - (len(names) - 1) / 2) * w, 100 * np.asarray(acc[name])[order], w, label=name)
    if len(order) <= 40:
        ax.set_xticks(x, [f"{classes[i]}\n({int(train_counts[i])})" for i in order], fontsize=7)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("per-class accuracy, classes sorted by real training count")
    ax.legend(fontsize=8)
    return _save(fig, path)


def sample_grid(classes: Sequence[str], real: dict[int, list[Path]], synthetic: dict[int, list[Path]],
                path: Path, per_class: int = 4) -> Path:
    """One row per class: ``per_class`` real images, then ``per_class`` synthetic ones."""
    from PIL import Image

    C = len(classes)
    fig, axes = plt.subplots(C, 2 * per_class, figsize=(2 * per_class * 0.9, C * 0.95), squeeze=False)
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
    fig.suptitle("left: real, right: synthetic", fontsize=9)
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
