"""The paper's experiments at CPU scale, one module each, and the small libraries they use
(:mod:`~synaug.experiments.probe` for the domain gap, :mod:`~synaug.experiments.toy2d` for Fig. 5,
:mod:`~synaug.experiments.demo_rows` for rows paired with ``synaug demo``'s runs).

:data:`EXPERIMENTS` maps an experiment name to its module (interface: see
:mod:`synaug.experiments.common`); ``benchmarks/reproduce_cpu.py`` runs them and writes
``docs/results.md``.
"""
from __future__ import annotations

import importlib
from types import ModuleType

#: experiment name -> module name, in the order of docs/results.md
_MODULES = {"table1": "table1", "table2": "table2", "table3": "table3", "table4": "table4", "table5": "table5",
            "fig2": "fig2", "fig3": "fig3", "fig5": "fig5", "step3": "step3", "table1_long": "table1_long",
            "precision": "precision", "gap": "gap"}
ALIASES = {"probe": "fig3", "toy": "fig5", "replacement": "fig2"}
#: run only when named (``--only``): they add long runs beyond the default budget
OPTIONAL = ("table1_long", "precision", "gap")
#: the default set, in the order of docs/results.md
EXPERIMENTS = tuple(n for n in _MODULES if n not in OPTIONAL)


def experiment(name: str) -> ModuleType:
    """The module of experiment ``name`` (or one of its :data:`ALIASES`)."""
    name = ALIASES.get(name, name)
    if name not in _MODULES:
        from ..errors import SynaugError

        raise SynaugError(f"unknown experiment {name!r} (choose from {', '.join(_MODULES)})")
    return importlib.import_module(f"{__name__}.{_MODULES[name]}")


def run_specs(scale: str, names=EXPERIMENTS) -> dict[str, dict]:
    """Every run the named experiments use: run name -> raw run config (one definition per name)."""
    from ..errors import SynaugError

    out: dict[str, dict] = {}
    for name in names:
        for run, spec in experiment(name).specs(scale).items():
            if run in out and out[run] != spec:
                raise SynaugError(f"run {run!r} is defined differently by two experiments")
            out[run] = spec
    return out
