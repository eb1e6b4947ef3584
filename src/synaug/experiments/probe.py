"""Fig. 3a of the paper: a linear probe for the real-vs-synthetic domain gap.

A model trained on real data is frozen; its encoder features of ``n`` real and ``n``
synthetic images are fed to ONE linear layer (logistic regression on standardised features)
that learns to tell the two domains apart. The probe is fitted on one part of the probe data
and scored on the other; 50 % test accuracy means the features show no domain gap (the paper
measures 74.16 % for Stable Diffusion images vs CIFAR-100).

Two ways to get the domains:

* ``synthetic`` given (paper scale): real rows vs. generated rows, e.g. a run's
  ``synthetic/synthetic.parquet``;
* ``synthetic`` omitted (offline CPU stand-in): the real rows are split at random into two
  disjoint halves from the same distribution; the second half is passed through ``shift``
  (default: the pool backend's fixed :func:`synaug.generate.pool.synthetic_domain_shift`).
  The same halves without the shift form the *control*, which should score about 50 %.

CLI::

    python -m synaug.experiments.probe --run runs/table2-cpu            # CPU: held-out pool, shift
    python -m synaug.experiments.probe --checkpoint runs/x/train/model.safetensors \\
        --real runs/x/data/real.parquet --synthetic runs/y/synthetic/synthetic.parquet
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
                 device: str = "auto", batch_size: int = 256) -> dict:
    """Fig. 3a: how well one linear layer on frozen features separates real from synthetic.

    Parameters
    ----------
    model : Classifier
        Trained on real data; only ``model.features`` is used (frozen).
    real : Manifest
        Real images. Never pass the test split the model is evaluated on.
    synthetic : Manifest, optional
        Generated images. When omitted, ``2 * n_per_domain`` real rows are drawn at random and
        split in two disjoint halves; the second half passed through ``shift`` plays the
        synthetic domain, and the unshifted halves give a ``control`` probe (expected ~50 %).
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
        from all of ``synthetic``. Use real images the model did NOT train on (a held-out pool,
        or ``"test"`` for this analysis) so that memorisation cannot separate the domains.

    Returns
    -------
    dict
        ``{"synthetic": probe_accuracy(...)}`` when ``synthetic`` is given, otherwise
        ``{"shifted": ..., "control": ...}``; each entry as :func:`probe_accuracy`, plus the settings.
    """
    meta = getattr(model, "meta", {}) or {}
    size = meta.get("image_size")
    rng = np.random.default_rng(seed)
    settings = {"n_per_domain": n_per_domain, "test_fraction": test_fraction, "seed": seed,
                "feature_dim": int(getattr(model, "num_features", 0)) or None}
    if synthetic is not None:
        r = _draw(real, n_per_domain, rng, split, f"{n_per_domain} real images")
        s = _draw(synthetic, n_per_domain, rng, None, f"{n_per_domain} synthetic images")
        fr = encode(model, load_images(r, size), batch_size, device)
        fs = encode(model, load_images(s, size), batch_size, device)
        return {"synthetic": probe_accuracy(fr, fs, test_fraction, seed), "settings": settings}
    both = _draw(real, 2 * n_per_domain, rng, split,
                 f"2 x {n_per_domain} real images (half of them shifted)")
    half = np.zeros(len(both), bool)
    half[rng.permutation(len(both))[:n_per_domain]] = True
    a, b = both.select(half), both.select(~half)
    fa = encode(model, load_images(a, size), batch_size, device)
    fb = encode(model, load_images(b, size), batch_size, device)
    fb_shift = encode(model, load_images(b, size, shift), batch_size, device)
    name = shift if isinstance(shift, str) else getattr(shift, "__name__", "custom")
    return {"shifted": probe_accuracy(fa, fb_shift, test_fraction, seed),
            "control": probe_accuracy(fa, fb, test_fraction, seed),
            "settings": {**settings, "shift": name}}


# ---------------------------------------------------------------------------- CLI
def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m synaug.experiments.probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="a synaug run folder: its train/model.safetensors and data/heldout.parquet")
    p.add_argument("--checkpoint", help="model trained on real data (.safetensors)")
    p.add_argument("--real", help="manifest of real images (default with --run: data/heldout.parquet)")
    p.add_argument("--synthetic", help="manifest of synthetic images (omit: shifted real half)")
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
        res = domain_probe(model, Manifest.read(real),
                           Manifest.read(args.synthetic) if args.synthetic else None,
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
