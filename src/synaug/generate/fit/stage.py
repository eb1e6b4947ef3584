"""The ``fit:`` stage of ``synaug run``, between plan and generate.

:class:`FitStage` is built in the run's check phase (nothing written yet): it refuses a fit
that cannot work (no diffusion backend, a class without a real training image ...), folds the
fit's key into the generation key (so new adapters mean new images, and new images a new
training), and points the generation config at the adapters. ``run`` then fits, cached like
every stage, resumable inside. Without a ``fit`` section it changes nothing.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ...config import dump
from ...errors import SynaugError
from ...stages import fingerprint
from .config import FitConfig
from .data import caption_template, make_units
from .runner import check_same_fit, fit
from .runner import fingerprint as fit_fingerprint
from .store import INDEX


class FitStage:
    """``FitStage(cfg, run_dir, k_plan, plan, train_real)``; see the module docstring."""

    def __init__(self, cfg, run_dir: Path, k_plan: str, plan, train_real):
        self.dir = Path(run_dir) / "fit"
        self.on = cfg.fit is not None
        if not self.on:
            return
        g = cfg.generate
        if g is None or g.backend == "pool":
            raise SynaugError("fit: fitted adapters are for a diffusion model: give generate.backend txt2img or "
                              "img2img and generate.model (or remove the fit section)")
        if g.adapters:
            raise SynaugError("give either a fit section or generate.adapters (adapters fitted elsewhere), not both")
        if cfg.fit.model is not None and cfg.fit.model != g.model:
            raise SynaugError(f"fit.model {cfg.fit.model!r} differs from generate.model {g.model!r}: adapters only fit "
                              "the model they were fitted on (leave fit.model out in synaug run)")
        self.cfg: FitConfig = cfg.fit.model_copy(update={"model": g.model, "local_files_only": g.local_files_only})
        self.template, self.task = caption_template(self.cfg.template, g), g.task
        need = [] if plan is None else list(dict.fromkeys(c.class_name for c in plan.cells if c.synthetic > 0))
        self.classes = need
        self.on = bool(need)
        if self.on:  # a class to generate without a real image to fit on fails here, before any stage
            make_units(train_real, self.cfg.per, need)
        self.k_fit = fingerprint(k_plan, "fit", dump(self.cfg), self.template, self.task)

    def key(self, k_gen: str) -> str:
        """The generation key, with the fit's folded in when there is a fit."""
        return fingerprint(k_gen, self.k_fit) if self.on else k_gen

    def generate_config(self, gcfg):
        return gcfg.model_copy(update={"adapters": str(self.dir.resolve())}) if self.on and gcfg is not None else gcfg

    def run(self, st, train_real) -> None:
        """Fit (or skip when cached) on the real training rows of the run."""
        if not self.on:
            return
        changed = check_same_fit(self.dir, fit_fingerprint(self.cfg, self.template, self.task))
        note = f"the adapters in {self.dir} were fitted with other {', '.join(changed)}; fitting again" if changed else ""

        def s_fit():
            if changed:
                shutil.rmtree(self.dir)
            fit(train_real.split("train"), self.cfg, self.dir, self.classes, self.template, self.task)

        st.run("fit", self.k_fit, [self.dir / INDEX], s_fit, note=note)

