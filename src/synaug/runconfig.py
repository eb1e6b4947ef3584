"""The run config of ``synaug run``: its sections, seed propagation and loading.

Separate from :mod:`synaug.run` so that the checks (:mod:`synaug.checks`) and the commands that
only read a run config (``synaug generate --check``, ``synaug sweep``) need not import the pipeline.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field

from .config import Strict
from .errors import SynaugError
from .generate.config import GenerateConfig
from .generate.fit.config import FitConfig
from .prepare import DataConfig
from .train.config import FinetuneConfig, TrainConfig


class PlanStageConfig(Strict):
    mode: Literal["class", "cell", "agnostic", "spurious", "replace-class", "replace-ratio"] = "class"
    target: Optional[int] = Field(None, ge=0)
    k: Optional[int] = Field(None, ge=0)
    classes: Optional[list[str]] = None
    ratio: Optional[float] = Field(None, ge=0, le=1)
    equalize_groups: bool = False
    seed: int = 0


class EvalConfig(Strict):
    device: str = "auto"


class RunConfig(Strict):
    """A whole SYNAuG (or baseline) run. ``plan``/``generate``/``finetune`` null = stage off."""

    name: str = "run"
    description: str = ""
    seed: int = 0                                  # seeds train / finetune / generate unless they set one
    data: DataConfig = Field(default_factory=DataConfig)
    plan: Optional[PlanStageConfig] = Field(default_factory=PlanStageConfig)
    fit: Optional[FitConfig] = None                # fine-tune the generator on each class's real images
    generate: Optional[GenerateConfig] = None
    train: TrainConfig = Field(default_factory=TrainConfig)
    finetune: Optional[FinetuneConfig] = None
    eval: EvalConfig = Field(default_factory=EvalConfig)
    generator_note: str = ""                       # what played the generator, said in the report


def resolve(cfg: RunConfig) -> RunConfig:
    """Propagate the run seed into stages that did not set their own."""
    upd = {}
    if "seed" not in cfg.train.model_fields_set:
        upd["train"] = cfg.train.model_copy(update={"seed": cfg.seed})
    if cfg.finetune is not None and "seed" not in cfg.finetune.model_fields_set:
        upd["finetune"] = cfg.finetune.model_copy(update={"seed": cfg.seed})
    if cfg.generate is not None and "seed" not in cfg.generate.model_fields_set:
        upd["generate"] = cfg.generate.model_copy(update={"seed": cfg.seed})
    if cfg.fit is not None and "seed" not in cfg.fit.model_fields_set:
        upd["fit"] = cfg.fit.model_copy(update={"seed": cfg.seed})
    out = cfg.model_copy(update=upd)
    if out.generate is not None and out.plan is None:
        raise SynaugError("config: 'generate' needs a 'plan' section")
    return out


def load_run_config(path: str | Path | None, overrides: list[str] | None = None,
                    base: dict | None = None) -> RunConfig:
    """Read a run config. Relative paths in the file (``data.root``, ``data.manifest``,
    ``generate.pool.manifest`` ...: :func:`synaug.config.path_keys`) are resolved against the
    file's folder, as every command reading a config does; ``--set`` values are taken as typed
    (relative to the working directory)."""
    from .config import apply_overrides, read_yaml, resolve_paths, validate

    data = dict(base or {})
    if path is not None:
        file_data = read_yaml(path)
        resolve_paths(file_data, RunConfig, Path(path).resolve().parent)
        data = deep_merge(data, file_data)
    texts = apply_overrides(data, overrides)
    return resolve(validate(RunConfig, data, where=str(path) if path else "config", overrides=texts))


def deep_merge(a: dict, b: dict) -> dict:
    """``a`` with ``b`` merged in, section by section (``b`` wins)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
