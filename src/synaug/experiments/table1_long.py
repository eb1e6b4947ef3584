"""Table 1 at two training budgets (the CPU runs' epochs and LONG_EPOCHS): is a finding decided by the budget?

Not run by default (50-epoch runs: about 27 min per seed, 80 min for the three seeds on 2 cores,
2026-12-07): ``reproduce_cpu.py --only table1_long``.
"""
from __future__ import annotations

from . import table1
from .cifar_lt import REUSE, setup  # noqa: F401  (REUSE, setup: read by the driver)
from .common import Context

SEEDS = (0, 1, 2)  # 2.5x the runs of Table 1 per seed: three seeds fit the CPU budget
TITLE = "Table 1 at two training budgets"
PAPER = table1.PAPER
BUDGETS = ("", "_long")


def specs(scale: str) -> dict[str, dict]:
    return table1.specs(scale, BUDGETS)


def runs(scale: str) -> list[str]:
    return table1.runs(scale, BUDGETS)


def analyse(runners, ctx: Context) -> tuple[list[str], float]:
    return table1.analyse(runners, ctx, BUDGETS)
