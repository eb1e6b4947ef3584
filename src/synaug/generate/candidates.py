"""The candidates of a selection run (``generate.select``): ``candidates`` x the plan, made by
the backend as a run without selection would be, and their rows per cell.

Shared by the scorer (round 1 trains on :func:`first_rows`) and the selector.
"""
from __future__ import annotations

import copy

import numpy as np

from ..manifest import Manifest
from ..plan import Plan
from .config import GenerateConfig, SelectConfig


def candidate_plan(plan: Plan, k: int) -> Plan:
    """``plan`` with every cell's synthetic count multiplied by ``k``."""
    out = copy.deepcopy(plan)
    for c in out.cells:
        c.synthetic *= k
    return out


def candidate_config(gcfg: GenerateConfig) -> GenerateConfig:
    """The generation config of the candidates: ``gcfg`` without its selection (so changing the
    selector or scorer never makes the candidates again)."""
    return gcfg.model_copy(update={"select": SelectConfig()})


def cell_positions(cands: Manifest, plan: Plan) -> dict[str, np.ndarray]:
    """Row positions of each cell's candidates, in index order (the merge writes plan order)."""
    df = cands.df
    out = {}
    for c in plan.cells:
        if c.synthetic == 0:
            continue
        mask = (df["label"] == c.label).to_numpy()
        if c.group >= 0:
            mask &= (df["group"] == c.group).to_numpy()
        out[c.key] = np.flatnonzero(mask)
    return out


def first_rows(cands: Manifest, plan: Plan) -> Manifest:
    """The first ``need`` candidates of every cell: exactly the images a run without selection
    makes (the pool's draw and txt2img's seeds are prefixes of the candidates'); round 1 of the
    feedback loop trains on them."""
    keep = np.zeros(len(cands), bool)
    pos = cell_positions(cands, plan)
    for c in plan.cells:
        if c.synthetic:
            keep[pos[c.key][:c.synthetic]] = True
    return cands.select(keep)
