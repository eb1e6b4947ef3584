"""Selection from a larger candidate set (``generate.select``; beyond the paper, off by default).

The backend offers ``candidates`` x the images each plan cell needs (the pool: that many distinct
images of the cell's class, a prefix-extension of today's draw; txt2img: more seeds), a scorer
model that synaug trains itself scores them, and a selector keeps the needed number per cell
(or ``rotate`` keeps them all, in rounds of the needed number that training takes in turn).

In ``synaug run`` this is three cached, resumable stages (:func:`run_selection`):

* ``candidates``: :func:`synaug.generate.generate` of the candidate plan into
  ``synthetic/candidates/`` (resumable image by image);
* ``scorer``: the scorer model (:mod:`synaug.generate.scorer`; its training resumes from its
  checkpoints after a kill);
* ``select``: scores (probability of the intended class, encoder features), the selector's
  choice per cell, ``select/synthetic.parquet`` (the kept rows, each with its ``select_score``
  and ``selector``), ``select/candidates.parquet`` (every candidate, kept or not, with its
  scores), ``select/selection.json`` (kept / rejected per class) and ``select/examples.png``
  (kept vs rejected thumbnails).

``candidates: 1`` with ``selector: random`` is not a selection at all: ``synaug run`` then makes
exactly today's images. The selectors themselves (:func:`select_cell`) are plain functions of the
scores, so they are tested without any model.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import SynaugError
from ..manifest import Manifest
from ..plan import Plan
from .base import derive_seed
from .candidates import candidate_config, candidate_plan, cell_positions
from .config import GenerateConfig, SelectConfig

SELECTORS = ("random", "confidence", "typicality", "diversity", "typical-diverse", "rotate")


# ---------------------------------------------------------------------------- the selectors
def typicality(feats: np.ndarray, real: np.ndarray, knn: int = 0) -> np.ndarray:
    """Cosine similarity of each (L2-normalised) candidate feature to the real images of its
    class: to their centroid (``knn: 0``), or the mean over its ``knn`` nearest real images."""
    if len(real) == 0:
        return np.zeros(len(feats))
    if knn <= 0:
        c = real.mean(0)
        return feats @ (c / max(np.linalg.norm(c), 1e-12))
    sims = feats @ real.T
    k = min(knn, real.shape[0])
    return np.sort(sims, axis=1)[:, -k:].mean(1)


def k_center(feats: np.ndarray, n: int) -> np.ndarray:
    """Greedy k-center on cosine distance: start at the candidate nearest the mean, then add the
    candidate farthest from everything picked so far. Returns ``n`` positions in pick order."""
    if n >= len(feats):
        return np.arange(len(feats))
    mean = feats.mean(0)
    first = int(np.argmax(feats @ mean))
    picked = [first]
    dist = 1.0 - feats @ feats[first]
    dist[first] = -np.inf
    for _ in range(n - 1):
        j = int(np.argmax(dist))
        picked.append(j)
        dist = np.minimum(dist, 1.0 - feats @ feats[j])
        dist[picked] = -np.inf
    return np.asarray(picked)


def nearest_kept_distance(feats: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Cosine distance of every candidate to the nearest kept candidate other than itself."""
    d = 1.0 - feats @ feats[kept].T
    d[kept, np.arange(len(kept))] = np.inf
    return d.min(1) if len(kept) > 1 else np.full(len(feats), np.nan)


def select_cell(sel: SelectConfig, n: int, prob: Optional[np.ndarray], feats: Optional[np.ndarray],
                real: Optional[np.ndarray], rng: np.random.Generator, size: Optional[int] = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Which ``n`` of a cell's candidates to keep, and every candidate's score.

    ``prob``: the scorer's confidence in the intended class per candidate (its log-probability);
    ``feats``: their L2-normalised scorer features; ``real``: those of the class's real training
    images; ``size``: the number of candidates (default: the length of ``prob`` or ``feats``; a
    selector without a scorer has neither). Returns ``(kept positions, scores)``; the score is what
    the selector ranks by (random: the confidence when a scorer ran, else NaN; typicality: the cosine similarity;
    diversity: the cosine distance to the nearest other kept candidate; rotate: the round).
    """
    M = size if size is not None else len(prob) if prob is not None else len(feats) if feats is not None else 0
    if n > M:
        raise SynaugError(f"a cell needs {n} images but has only {M} candidates")
    s = sel.selector
    if s == "rotate":  # every whole round of n, in the backend's order: round 0 is today's draw
        rounds = M // n if n else 0
        return np.arange(rounds * n), (np.arange(M) // max(n, 1)).astype(float)
    if s == "random":
        score = prob if prob is not None else np.full(M, np.nan)
        return np.sort(rng.permutation(M)[:n]), score
    if s == "confidence":
        order = np.argsort(prob, kind="stable")          # least confident first
        if sel.keep == "most":
            kept = order[M - n:]
        elif sel.keep == "least":
            kept = order[:n]
        else:  # the middle of the ranking: the uncertain ones
            lo = (M - n) // 2
            kept = order[lo:lo + n]
        return np.sort(kept), prob
    if s == "typicality":
        score = typicality(feats, real, sel.knn)
        return np.sort(np.argsort(-score, kind="stable")[:n]), score
    if s == "diversity":
        kept = k_center(feats, n)
        return np.sort(kept), nearest_kept_distance(feats, kept)
    if s == "typical-diverse":
        score = typicality(feats, real, sel.knn)
        pool = np.argsort(-score, kind="stable")[:max(n, int(np.ceil(sel.typical_share * M)))]
        return np.sort(pool[k_center(feats[pool], n)]), score
    raise SynaugError(f"unknown selector {s!r} (one of: {', '.join(SELECTORS)})")


# ---------------------------------------------------------------------------- checks
def check_selection(cfg, plan: Plan, gcfg: GenerateConfig, heldout: Optional[Manifest] = None,
                    cand_dir: Optional[Path] = None) -> None:
    """One-line errors before any stage runs: the pool holds ``candidates`` x the plan (unless
    ``cand_dir`` already holds these candidates), the scorer checkpoint has the plan's classes."""
    sel = gcfg.select
    if sel.selector == "rotate" and cfg.train.algorithm.name != "ce":   # its counts / weights span every round
        raise SynaugError(f"generate.select.selector rotate changes the training rows of every epoch; algorithm "
                          f"{cfg.train.algorithm.name!r} takes class counts or sampling weights from all rows "
                          "(use algorithm ce)")
    cplan = candidate_plan(plan, sel.candidates)
    if gcfg.backend == "pool" and not _made(cand_dir, cplan, candidate_config(gcfg)):
        from .pool import PoolGenerator, load_pool

        try:
            if heldout is not None:
                PoolGenerator(cplan, heldout, gcfg.seed, gcfg.pool.name, gcfg.pool.shift, gcfg.pool.split,
                              gcfg.pool.match_groups, gcfg.resolution, gcfg.resize_filter)
            else:
                load_pool(cplan, gcfg)
        except SynaugError as e:
            raise SynaugError(f"generate.select.candidates {sel.candidates}: {e}") from None
    if sel.needs_scorer and sel.scorer.model == "checkpoint":
        from ..train.checkpoint import read_meta, resolve_checkpoint

        path = resolve_checkpoint(sel.scorer.path)
        classes = read_meta(path).get("classes")
        if classes is not None and list(classes) != list(plan.classes):
            raise SynaugError(f"generate.select.scorer.path: the checkpoint's classes ({', '.join(classes[:6])}"
                              f"{', ...' if len(classes) > 6 else ''}) differ from the plan's "
                              f"({', '.join(plan.classes[:6])}{', ...' if len(plan.classes) > 6 else ''})")


def _made(cand_dir: Optional[Path], cplan: Plan, ccfg: GenerateConfig) -> bool:
    """Whether ``cand_dir`` holds the finished candidates of this plan and config."""
    from .runner import fingerprint as gen_fingerprint

    if cand_dir is None or not (cand_dir / "synthetic.parquet").is_file():
        return False
    try:
        return json.loads((cand_dir / "run.json").read_text()).get("digest") == gen_fingerprint(cplan, ccfg)["digest"]
    except (OSError, json.JSONDecodeError):
        return False


# ---------------------------------------------------------------------------- the stages
def run_selection(st, cfg, plan: Plan, gcfg: GenerateConfig, run_dir: Path, train_real: Manifest,
                  k_plan: str) -> Manifest:
    """The ``candidates``, ``scorer`` and ``select`` stages of ``synaug run``; returns the kept
    rows (also written to ``run_dir/select/synthetic.parquet``)."""
    from ..config import dump
    from ..stages import fingerprint
    from .runner import fingerprint as gen_fingerprint, generate
    from .scorer import scorer_stage

    sel = gcfg.select
    syn_dir = run_dir / "synthetic"
    cand_dir = syn_dir / "candidates"
    cplan, ccfg = candidate_plan(plan, sel.candidates), candidate_config(gcfg)
    k_cand = fingerprint(k_plan, "candidates", dump(ccfg), sel.candidates)
    note = _stale_candidates(cand_dir, gen_fingerprint(cplan, ccfg)["digest"])
    st.run("candidates", k_cand, [cand_dir / "synthetic.parquet"],
           lambda: generate(cplan, ccfg, cand_dir, real_manifest=train_real.split("train"), progress=True),
           note=note)
    cands = Manifest.read(cand_dir / "synthetic.parquet")
    scorer = None
    if sel.needs_scorer:
        scorer = scorer_stage(st, cfg, sel.scorer, plan, cands, train_real, run_dir / "scorer", k_cand)
    k_sel = fingerprint(k_cand, "select", dump(sel), scorer["key"] if scorer else None)
    out = run_dir / "select" / "synthetic.parquet"
    st.run("select", k_sel, [out, run_dir / "select" / "selection.json"],
           lambda: _select_stage(cfg, sel, gcfg.seed, plan, cands, train_real, scorer, run_dir))
    return Manifest.read(out)


def _stale_candidates(cand_dir: Path, digest: str) -> str:
    """Remove candidates made for another plan or config (what the generate stage does too)."""
    old = cand_dir / "run.json"
    if not old.is_file():
        return ""
    try:
        was = json.loads(old.read_text()).get("digest")
    except json.JSONDecodeError:
        was = None
    if was == digest:
        return ""
    shutil.rmtree(cand_dir)
    return f"the candidates in {cand_dir} were made for another plan or config; making them again"


def _select_stage(cfg, sel: SelectConfig, seed: int, plan: Plan, cands: Manifest, train_real: Manifest,
                  scorer: Optional[dict], run_dir: Path) -> None:
    from ..io import atomic_path, write_json_atomic

    prob = feats = real_feats = None
    if scorer is not None:
        from .scorer import score_images

        prob, feats = score_images(scorer["path"], cands, cfg.train)
        real = train_real.split("train").with_source("real")
        _, rf = score_images(scorer["path"], real, cfg.train)
        real_feats = {c: rf[(real.df["label"] == c).to_numpy()] for c in range(real.num_classes)}
    kept, score = select_rows(sel, seed, plan, cands, prob, feats, real_feats)
    out = cands.select(kept)
    out.df["select_score"] = score[kept]
    out.df["selector"] = describe(sel)
    if sel.selector == "rotate":   # training reads it (synaug.train.synthetic.rounds_of)
        out.df["select_round"] = score[kept].astype(np.int64)
    sdir = run_dir / "select"
    sdir.mkdir(parents=True, exist_ok=True)
    out.write(sdir / "synthetic.parquet")
    rows = cands.df.assign(kept=kept, select_score=score, confidence=np.exp(prob) if prob is not None else np.nan)
    with atomic_path(sdir / "candidates.parquet") as tmp:   # every candidate, kept or not, with its scores
        rows[["path", "label", "class_name", "group", "source_file", "kept", "select_score", "confidence"]
             ].to_parquet(tmp, index=False)
    summary = selection_summary(sel, cands, kept, score, prob, scorer)
    if cands.num_classes <= 20 and not kept.all():
        from .thumbnails import EXAMPLES, kept_rejected_grid

        kept_rejected_grid(cands, kept, EXAMPLES, sdir / "examples.png")
        summary["examples"] = "examples.png"
    write_json_atomic(sdir / "selection.json", summary)


def select_rows(sel: SelectConfig, seed: int, plan: Plan, cands: Manifest, prob, feats, real_feats
                ) -> tuple[np.ndarray, np.ndarray]:
    """A kept mask over the candidate rows and every candidate's score (:func:`select_cell` per cell)."""
    kept = np.zeros(len(cands), bool)
    score = np.full(len(cands), np.nan)
    pos = cell_positions(cands, plan)
    for c in plan.cells:
        if not c.synthetic:
            continue
        p = pos[c.key]
        rng = np.random.default_rng(derive_seed(seed, c.key, 0, purpose="select"))
        k, s = select_cell(sel, c.synthetic, None if prob is None else prob[p], None if feats is None else feats[p],
                           None if real_feats is None else real_feats.get(c.label, feats[:0]), rng, len(p))
        kept[p[k]] = True
        score[p] = s
    return kept, score


def describe(sel: SelectConfig) -> str:
    """The ``selector`` column's value, e.g. ``confidence:middle x10 (round1 scorer)``."""
    what = sel.selector + (f":{sel.keep}" if sel.selector == "confidence" else "")
    if sel.selector in ("typicality", "typical-diverse") and sel.knn:
        what += f":knn{sel.knn}"
    return what + f" x{sel.candidates}" + (f" ({sel.scorer.model} scorer)" if sel.needs_scorer else "")


def selection_summary(sel: SelectConfig, cands: Manifest, kept: np.ndarray, score: np.ndarray, prob,
                      scorer: Optional[dict]) -> dict:
    """Kept vs rejected per class, with the mean score and log-probability of the intended class of each."""
    per = {}
    lab = cands.df["label"].to_numpy()

    def mean(x):
        x = x[~np.isnan(x)] if x.dtype.kind == "f" else x
        return None if len(x) == 0 else round(float(x.mean()), 4)

    for c in np.unique(lab):
        m = lab == c
        row = {"candidates": int(m.sum()), "kept": int((m & kept).sum()), "rejected": int((m & ~kept).sum()),
               "score_kept": mean(score[m & kept]), "score_rejected": mean(score[m & ~kept])}
        if prob is not None:
            row.update(confidence_kept=mean(prob[m & kept]), confidence_rejected=mean(prob[m & ~kept]))
        per[cands.classes[c]] = row
    return {"selector": describe(sel), "candidates_factor": sel.candidates,
            "rounds": sel.candidates if sel.selector == "rotate" else None,
            "scorer": None if scorer is None else scorer["description"],
            "scorer_path": None if scorer is None else str(scorer["path"]),
            "kept": int(kept.sum()), "rejected": int((~kept).sum()), "per_class": per}
