"""Fig. 3 of the paper: the real-vs-synthetic domain gap, measured on frozen features.

Fig. 3a, a linear probe: a model trained on real data is frozen; its encoder features of ``n``
real and ``n`` synthetic images are fed to ONE linear layer (logistic regression on
standardised features) that learns to tell the two domains apart. The probe is fitted on one
part of the probe data and scored on the other; 50 % test accuracy means the features show no
domain gap (the paper measures 74.16 % for Stable Diffusion images vs CIFAR-100). A control
probe separates two disjoint halves of the real images (expected ~50 %).

Fig. 3b, where real and synthetic features of two classes lie: :func:`class_domain_features`
and :func:`centroid_distances` (the plot is drawn by :mod:`synaug.experiments.fig3`).

The synthetic domain is a manifest or dataset of generated images (``shared-sd14``: Stable
Diffusion 1.4 images of the CIFAR-10 classes), or, without one, the real half passed through
a fixed image ``shift`` (the pool backend's ``synthetic-domain`` transform).

CLI::

    python -m synaug.experiments.probe --checkpoint runs/x/train/model.safetensors \\
        --real runs/x/data/heldout.parquet --synthetic shared-sd14
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ..errors import SynaugError
from ..manifest import Manifest

SHIFTS = ("synthetic-domain", "none")


def _shift_fn(shift: str | Callable | None) -> Optional[Callable]:
    if shift is None or shift == "none":
        return None
    if callable(shift):
        return shift
    if shift == "synthetic-domain":
        from ..generate.pool import synthetic_domain_shift

        return synthetic_domain_shift
    raise SynaugError(f"unknown probe shift {shift!r} (choose from {', '.join(SHIFTS)})")


# ---------------------------------------------------------------------------- probe proper
def probe_accuracy(feats_real: np.ndarray, feats_syn: np.ndarray, test_fraction: float = 0.5,
                   seed: int = 0, C: float = 1.0) -> dict:
    """Fit one linear layer (logistic regression) real=0 vs synthetic=1 and score it on held-out rows.

    Parameters
    ----------
    feats_real, feats_syn : array, shape (n, d)
        Frozen features of the two domains.
    test_fraction : float
        Share of each domain kept out of fitting and used to score the probe.
    seed : int
        Seeds the stratified train/test split.
    C : float
        Inverse L2 regularisation of the logistic regression.

    Returns
    -------
    dict
        ``accuracy`` (test), ``train_accuracy``, ``n_real``, ``n_synthetic``, ``n_train``,
        ``n_test``, ``stderr`` (binomial standard error of a 50 % classifier on ``n_test``).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    a, b = np.asarray(feats_real, np.float64), np.asarray(feats_syn, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise SynaugError(f"probe features must be two (n, d) arrays of the same d, got {a.shape} and {b.shape}")
    if min(len(a), len(b)) < 4:
        raise SynaugError("the probe needs at least 4 samples per domain")
    if not 0.0 < test_fraction < 1.0:
        raise SynaugError(f"test_fraction must be in (0, 1), got {test_fraction}")
    X = np.concatenate([a, b])
    y = np.concatenate([np.zeros(len(a), int), np.ones(len(b), int)])
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_fraction, stratify=y, random_state=seed)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000))
    clf.fit(Xtr, ytr)
    return {"accuracy": float((clf.predict(Xte) == yte).mean()),
            "train_accuracy": float((clf.predict(Xtr) == ytr).mean()),
            "n_real": int(len(a)), "n_synthetic": int(len(b)), "n_train": int(len(ytr)), "n_test": int(len(yte)),
            "stderr": float(0.5 / np.sqrt(len(yte)))}


# ---------------------------------------------------------------------------- features
def load_images(manifest: Manifest, image_size: Optional[int] = None,
                shift: str | Callable | None = None) -> torch.Tensor:
    """All images of ``manifest`` as a ``uint8`` tensor ``(N, 3, H, W)``, optionally shifted.

    The shift is applied to the decoded (and resized) PIL image, as the pool backend does
    before it writes a "synthetic" image.
    """
    from PIL import Image

    fn = _shift_fn(shift)
    out = []
    for p in manifest.abspaths():
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                if image_size is not None and im.size != (image_size, image_size):
                    im = im.resize((image_size, image_size), Image.BILINEAR, reducing_gap=None)
                if fn is not None:
                    im = fn(im)
                out.append(np.asarray(im, dtype=np.uint8))
        except FileNotFoundError:
            raise SynaugError(f"image file not found: {p}") from None
    if not out:
        raise SynaugError("no images to encode")
    if len({a.shape for a in out}) > 1:
        raise SynaugError("probe images have different sizes; pass image_size")
    return torch.from_numpy(np.ascontiguousarray(np.stack(out).transpose(0, 3, 1, 2)))


@torch.inference_mode()
def encode(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256,
           device: str | torch.device = "auto") -> np.ndarray:
    """Frozen encoder features ``model.features(x)`` of uint8 ``images``, normalised as in training."""
    from ..train.data import Normalizer
    from ..train.evaluate import resolve_device

    dev = resolve_device(device)
    meta = getattr(model, "meta", {}) or {}
    from ..train.config import AugmentConfig

    aug = AugmentConfig()
    norm = Normalizer(tuple(meta.get("mean", aug.mean)), tuple(meta.get("std", aug.std)), dev, False)
    was_training = model.training
    model = model.to(dev).eval()
    feats = []
    for i in range(0, len(images), batch_size):
        feats.append(model.features(norm(images[i:i + batch_size].to(dev))).float().cpu())
    model.train(was_training)
    return torch.cat(feats).numpy()


def _draw(manifest: Manifest, n: int, rng: np.random.Generator, split: Optional[str], what: str) -> Manifest:
    m = manifest.split(split) if split else manifest
    if len(m) < n:
        where = f" in split {split!r}" if split else ""
        raise SynaugError(f"the probe needs {what} but only {len(m)} images are available{where}")
    keep = np.zeros(len(m), bool)
    keep[rng.permutation(len(m))[:n]] = True
    return m.select(keep)


def domain_probe(model: torch.nn.Module, real: Manifest, synthetic: Optional[Manifest] = None,
                 n_per_domain: int = 2500, shift: str | Callable | None = "synthetic-domain",
                 test_fraction: float = 0.5, seed: int = 0, split: Optional[str] = "train",
                 device: str = "auto", batch_size: int = 256, control: bool = True) -> dict:
    """Fig. 3a: how well one linear layer on frozen features separates real from synthetic.

    Parameters
    ----------
    model : Classifier
        Trained on real data; only ``model.features`` is used (frozen).
    real : Manifest
        Real images. Never pass the test split the model is evaluated on.
    synthetic : Manifest, optional
        Generated images (e.g. ``load_dataset("shared-sd14")`` or a run's
        ``synthetic/synthetic.parquet``). When omitted, the second half of the real draw passed
        through ``shift`` plays the synthetic domain.
    n_per_domain : int
        Images per domain (the paper: 2,500).
    shift : {"synthetic-domain", "none"} or callable
        Image transform of the stand-in synthetic half (only when ``synthetic`` is None).
    test_fraction : float
        Share of the probe data used to score the probe (the rest fits it).
    seed : int
        Seeds the draw of probe images and the train/test split.
    split : str, optional
        Only real rows of this split are drawn (``None``: all rows); synthetic rows are drawn
        from all of ``synthetic``. Use real images the model did NOT train on (a held-out pool)
        so that memorisation cannot separate the domains.
    control : bool
        Also probe real vs real: ``2 * n_per_domain`` real rows are drawn and split in two
        disjoint halves from the same distribution (expected ~50 %).

    Returns
    -------
    dict
        ``{"synthetic": ...}`` (or ``{"shifted": ...}`` without ``synthetic``), plus
        ``"control"``; each entry as :func:`probe_accuracy`, and ``"settings"``.
    """
    meta = getattr(model, "meta", {}) or {}
    size = meta.get("image_size")
    rng = np.random.default_rng(seed)
    settings = {"n_per_domain": n_per_domain, "test_fraction": test_fraction, "seed": seed,
                "feature_dim": int(getattr(model, "num_features", 0)) or None}
    two = control or synthetic is None
    what = f"2 x {n_per_domain} real images (two disjoint halves)" if two else f"{n_per_domain} real images"
    drawn = _draw(real, (2 if two else 1) * n_per_domain, rng, split, what)
    half = np.zeros(len(drawn), bool)
    half[rng.permutation(len(drawn))[:n_per_domain]] = True
    a, b = drawn.select(half), drawn.select(~half)
    fa = encode(model, load_images(a, size), batch_size, device)
    out: dict = {}
    if synthetic is not None:
        s = _draw(synthetic, n_per_domain, rng, None, f"{n_per_domain} synthetic images")
        out["synthetic"] = probe_accuracy(fa, encode(model, load_images(s, size), batch_size, device),
                                          test_fraction, seed)
    else:
        out["shifted"] = probe_accuracy(fa, encode(model, load_images(b, size, shift), batch_size, device),
                                        test_fraction, seed)
        settings["shift"] = shift if isinstance(shift, str) else getattr(shift, "__name__", "custom")
    if control:
        out["control"] = probe_accuracy(fa, encode(model, load_images(b, size), batch_size, device),
                                        test_fraction, seed)
    out["settings"] = settings
    return out


def class_domain_features(model: torch.nn.Module, real: Manifest, synthetic: Manifest, classes: list[str],
                          n: int, seed: int = 0, device: str = "auto") -> dict[tuple[str, str], np.ndarray]:
    """Frozen features of ``n`` real and ``n`` synthetic images of each named class:
    ``{("real" | "synthetic", class name): (n, d) array}`` (Fig. 3b)."""
    size = (getattr(model, "meta", {}) or {}).get("image_size")
    rng = np.random.default_rng(seed)
    out = {}
    for domain, m in (("real", real), ("synthetic", synthetic)):
        for c in classes:
            part = m.select((m.df["class_name"] == c).to_numpy())
            sub = _draw(part, n, rng, None, f"{n} {domain} images of class {c!r}")
            out[(domain, c)] = encode(model, load_images(sub, size), device=device)
    return out


def centroid_distances(feats: dict[tuple[str, str], np.ndarray]) -> dict[str, float]:
    """Distances between the centroids of every (domain, class) pair of :func:`class_domain_features`,
    in units of the mean within-set spread (root mean squared distance to its own centroid)."""
    cents = {k: v.mean(0) for k, v in feats.items()}
    spread = float(np.mean([np.sqrt(((v - cents[k]) ** 2).sum(1).mean()) for k, v in feats.items()]))
    keys = list(feats)
    out = {}
    for i, ka in enumerate(keys):
        for kb in keys[i + 1:]:
            out[f"{ka[0]} {ka[1]} ~ {kb[0]} {kb[1]}"] = float(np.linalg.norm(cents[ka] - cents[kb]) / spread)
    return out


# ---------------------------------------------------------------------------- CLI
def _synthetic(spec: Optional[str]) -> Optional[Manifest]:
    """A manifest file, or the name of a registered dataset (``shared-sd14``)."""
    if not spec:
        return None
    from ..data import list_datasets, load_dataset

    return load_dataset(spec) if spec in list_datasets() else Manifest.read(spec)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m synaug.experiments.probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="a synaug run folder: its train/model.safetensors and data/heldout.parquet")
    p.add_argument("--checkpoint", help="model trained on real data (.safetensors)")
    p.add_argument("--real", help="manifest of real images (default with --run: data/heldout.parquet)")
    p.add_argument("--synthetic", help="manifest or dataset name of synthetic images, e.g. shared-sd14 "
                                       "(omit: the shifted real half)")
    p.add_argument("--shift", choices=SHIFTS, default="synthetic-domain")
    p.add_argument("--n", type=int, default=2500, help="images per domain (default 2500)")
    p.add_argument("--test-fraction", type=float, default=0.5)
    p.add_argument("--split", default="train",
                   help="draw only real rows of this split ('all': every row); default train")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="write the result as JSON here")
    args = p.parse_args(argv)
    try:
        from ..io import write_json_atomic
        from ..train import load_checkpoint

        run = Path(args.run) if args.run else None
        ckpt = args.checkpoint or (run / "train" / "model.safetensors" if run else None)
        real = args.real or (run / "data" / "heldout.parquet" if run else None)
        if ckpt is None or real is None:
            raise SynaugError("give --run, or --checkpoint and --real")
        model = load_checkpoint(ckpt)
        res = domain_probe(model, Manifest.read(real), _synthetic(args.synthetic),
                           n_per_domain=args.n, shift=args.shift, test_fraction=args.test_fraction,
                           seed=args.seed, split=None if args.split == "all" else args.split,
                           device=args.device)
    except SynaugError as e:
        print(f"synaug: error: {e}", file=sys.stderr)
        return 2
    for k, v in res.items():
        if k != "settings":
            print(f"{k}: probe accuracy {100 * v['accuracy']:.2f}% on {v['n_test']} held-out probe images "
                  f"(50% = no domain gap; 1 s.e. = {100 * v['stderr']:.2f}%)")
    if args.out:
        write_json_atomic(args.out, res)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
