"""Which code and machine made a result: synaug version and git commit, CPU model, torch version.

Stage records (:mod:`synaug.stages`) carry it, so a run folder says which commit computed each stage;
the experiments' records (:mod:`synaug.experiments.records`) copy it next to the metrics.
"""
from __future__ import annotations

import datetime
import functools
import platform
import subprocess
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=_HERE, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.lru_cache(maxsize=None)
def commit() -> str:
    """Short git commit of the synaug source in use, ``+dirty`` when its tracked files under ``src``
    differ from it; ``unknown`` outside a git checkout (an installed package). Read once per process."""
    c = _git("rev-parse", "--short", "HEAD")
    if not c or not _git("ls-files", "--", "__init__.py"):   # not synaug's own checkout (e.g. an
        return "unknown"                                             # installed copy inside another repo)
    return c + ("+dirty" if _git("status", "--porcelain", "--untracked-files=no", "--", str(_HERE.parent)) else "")


@functools.lru_cache(maxsize=None)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance() -> dict:
    """``{"synaug", "commit", "cpu", "torch", "date"}`` of this process."""
    import torch

    from . import __version__

    return {"synaug": __version__, "commit": commit(), "cpu": cpu_model(), "torch": torch.__version__,
            "date": datetime.date.today().isoformat()}


__all__ = ["commit", "cpu_model", "provenance"]
