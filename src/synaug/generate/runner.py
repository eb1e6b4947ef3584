"""Run a plan through a generator: deterministic, resumable, sharded, with a manifest.

Output layout (``out_dir``)::

    images/<cell>/<index>.png     cell = plan cell key with "/" -> "_"; written atomically
    manifest/rank<r>-part<k>.parquet   rows of finished batches (deleted after the merge)
    synthetic.parquet             the merged Manifest (roots {"synthetic": out_dir})
    generate.yaml, plan.json, run.json   resolved config, plan copy, fingerprint

Resume rule: an image counts as done iff it has a manifest row *with the image's key* and its
file exists (and decodes, with ``verify_on_resume``). Everything else is made again from the
same seed and overwrites any file of that name atomically, so a crash at any point (even
SIGKILL between writing an image and its row) leaves no duplicates, losses or truncated files.

An image's key (:func:`item_keys`) hashes what decides its pixels: the result-relevant config,
its cell, index, seed and prompt, and what the backend draws on (the pool file it copies, the
img2img guide). With ``update=True`` (``synaug run``; ``synaug generate --update``) a changed
plan or config keeps every image whose key still matches and makes only the others; images the
plan no longer has are removed after the merge. The result is the same as a fresh generation.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..config import dump, save_resolved
from ..errors import SynaugError
from ..io import atomic_path, flush_to_disk, remove_temps, write_bytes_atomic, write_json_atomic
from ..manifest import Manifest
from ..plan import Plan
from .base import Item, derive_seed, plan_items, png_bytes, to_square
from .config import NON_RESULT_KEYS, GenerateConfig
from .dist import DistInfo, barrier

SHARD_DIR = "manifest"
MERGED = "synthetic.parquet"
_PART_RE = re.compile(r"^rank(\d+)-part(\d+)\.parquet$")
_ROW_COLS = ["path", "seed", "prompt", "generator", "source_file", "item_key", "adapter", "adapter_sha256"]
# what the prompt already holds, or (pool) the file an image copies: not part of an image's key
_PROMPT_KEYS = {"task", "template", "modifiers", "prompts"}
_POOL_SOURCE_KEYS = {"manifest", "dataset", "root", "options", "split", "name", "match_groups", "replacement"}


# ---------------------------------------------------------------------------- setup
def build_prompt_fn(plan: Plan, cfg: GenerateConfig):
    """``(cell, seed) -> prompt`` for the config; pool images get an empty prompt."""
    from ..prompts import (TASKS, PromptBuilder, builtin_modifiers_for, class_prompts, modifiers,
                           placeholders)

    if cfg.backend == "pool":
        return lambda cell, seed: ""
    template = cfg.template if cfg.template is not None else TASKS[cfg.task].template
    prompts = class_prompts(cfg.prompts, plan.classes) if cfg.prompts else None
    wants = "modifier" in placeholders(template) or any(
        "modifier" in placeholders(p) for ps in (prompts or {}).values() for p in ps)
    mods = None
    if wants and cfg.modifiers != "none":
        name = cfg.modifiers
        if name == "auto":
            name = builtin_modifiers_for(plan.classes)
            if name is None:
                raise SynaugError("no shipped modifier list covers these classes; set modifiers: none "
                                  "(prompt 'a photo of {class}') or modifiers: <file.json>")
        mods = modifiers(name, plan.classes)
    builder = PromptBuilder(plan.classes, cfg.task, template, mods, prompts)
    builder.check(plan.cells)
    return builder.prompt


def build_generator(plan: Plan, cfg: GenerateConfig, real_manifest: Manifest | None, device: str):
    if cfg.backend == "pool":
        from .pool import load_pool

        return load_pool(plan, cfg)
    from .diffusers_backend import Img2ImgGenerator, Txt2ImgGenerator, load_pipeline
    from .fit.apply import with_adapters  # generate.adapters: each class by its fitted adapter

    if cfg.backend == "img2img":
        if real_manifest is None:
            raise SynaugError("backend img2img needs the real manifest (--real-manifest) for guidance images")
        return with_adapters(Img2ImgGenerator(load_pipeline(cfg, "img2img", device), cfg, plan, real_manifest), cfg, plan)
    return with_adapters(Txt2ImgGenerator(load_pipeline(cfg, "txt2img", device), cfg), cfg, plan)


def fingerprint(plan: Plan, cfg: GenerateConfig) -> dict:
    """What decides the images: plan + result-relevant config (not batch size / device)."""
    conf = {k: v for k, v in dump(cfg).items() if k not in NON_RESULT_KEYS}
    if cfg.adapters:  # the adapters' content, not only their folder, decides the images
        from .fit.store import adapters_digest

        conf["adapters_digest"] = adapters_digest(cfg.adapters)
    plan_d = {k: v for k, v in plan.to_dict().items() if k not in ("total_real", "drop_real")}
    digest = hashlib.sha256(json.dumps([conf, plan_d], sort_keys=True).encode()).hexdigest()
    return {"version": 1, "digest": digest, "config": conf}


def item_keys(items: Sequence[Item], cfg: GenerateConfig, gen) -> list[str]:
    """One key per item (in plan order): a hash of what decides its image. Config keys that only
    shape the prompt are left out (the prompt is in), and for the pool the keys choosing its
    files (the file is in, through the backend's ``identity(item)``)."""
    conf = {k: v for k, v in dump(cfg).items() if k not in NON_RESULT_KEYS | _PROMPT_KEYS}
    if cfg.backend == "pool":
        conf["pool"] = {k: v for k, v in conf["pool"].items() if k not in _POOL_SOURCE_KEYS}
    base = json.dumps(conf, sort_keys=True)
    ident = getattr(gen, "identity", None)
    adapter = _adapter_of_class(cfg)
    out = []
    for it in items:
        c = it.cell
        blob = json.dumps([base, c.key, c.class_name, c.group_name, it.index, it.seed, it.prompt,
                           ident(it) if ident else "", adapter(c.class_name)])
        out.append(hashlib.sha256(blob.encode()).hexdigest()[:24])
    return out


def _adapter_of_class(cfg: GenerateConfig):
    """class name -> the sha256 of the adapter that makes its images ("" without adapters): a
    re-fitted class's images are made again, the others kept."""
    if not cfg.adapters:
        return lambda name: ""
    from .fit.store import AdapterSet

    aset = AdapterSet.read(cfg.adapters)
    known = set(aset.classes)
    return lambda name: aset.entry(name).sha256 if name in known else ""


def _previous(out_dir: Path) -> dict | None:
    """The ``run.json`` of the generation already in ``out_dir`` (None: none, or unreadable)."""
    f = out_dir / "run.json"
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError:
        return None  # written atomically, so only a hand-edited file can be bad; it is rewritten


def _changed_since(out_dir: Path, fp: dict) -> str | None:
    """What differs from the generation run already in ``out_dir`` (None: none there, or the same)."""
    old = _previous(out_dir)
    if old is None or old.get("digest") == fp["digest"]:
        return None
    changed = sorted(k for k in set(old.get("config", {})) | set(fp["config"])
                     if old.get("config", {}).get(k) != fp["config"].get(k))
    return f"different config keys: {', '.join(changed)}" if changed else "a different plan"


def _check_same_run(out_dir: Path, fp: dict) -> None:
    what = _changed_since(out_dir, fp)
    if what is not None:
        raise SynaugError(f"{out_dir} holds a generation run with {what}; rerun with the same plan and config to "
                          "resume, add --update to keep the images that still match and make only the others, "
                          "or use a new --out")


# ---------------------------------------------------------------------------- shard rows
def _read_rows(out_dir: Path) -> dict[str, dict]:
    """path -> row from the merged manifest and every shard part (later parts win)."""
    rows: dict[str, dict] = {}
    merged = out_dir / MERGED
    for f in ([merged] if merged.is_file() else []) + _part_files(out_dir):
        try:
            df = pd.read_parquet(f)
        except FileNotFoundError:
            continue
        for col in ("source_file", "item_key", "adapter", "adapter_sha256"):  # written before they were recorded
            if col not in df.columns:
                df[col] = ""
        rows.update({r["path"]: r for r in df[_ROW_COLS].to_dict("records")})
    return rows


def _part_files(out_dir: Path) -> list[Path]:
    d = out_dir / SHARD_DIR
    if not d.is_dir():
        return []
    found = [(int(m[2]), int(m[1]), p) for p in d.iterdir() if (m := _PART_RE.match(p.name))]
    return [p for _, _, p in sorted(found)]


def _next_part(out_dir: Path, rank: int) -> int:
    ks = [int(m[2]) for p in _part_files(out_dir) if (m := _PART_RE.match(p.name)) and int(m[1]) == rank]
    return max(ks, default=-1) + 1


def _write_part(out_dir: Path, rank: int, k: int, rows: list[dict]) -> None:
    with atomic_path(out_dir / SHARD_DIR / f"rank{rank}-part{k:06d}.parquet") as tmp:
        pd.DataFrame(rows, columns=_ROW_COLS).to_parquet(tmp, index=False)


def _decodes(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:  # any decoder error means "make it again"
        return False


def _remove_stale_temps(out_dir: Path, mine: Sequence[Item], rank: int, world_size: int) -> None:
    """Delete temp files a killed run left behind: next to this rank's images, its shard
    parts and (rank 0) the top-level files. Other ranks' temp files may be live; not touched."""
    own = ".rank*-part*.tmp" if world_size == 1 else f".rank{rank}-part*.tmp"
    patterns = [(out_dir / SHARD_DIR, own)] + ([(out_dir, ".*.tmp")] if rank == 0 else [])
    for d, pat in patterns:
        remove_temps(d, pat)
    names_by_dir: dict[Path, set[str]] = {}
    for it in mine:
        p = out_dir / it.path
        names_by_dir.setdefault(p.parent, set()).add(p.name)
    for d, names in names_by_dir.items():
        remove_temps(d, owned=lambda t, names=names: t[1:].split(".png", 1)[0] + ".png" in names)


# ---------------------------------------------------------------------------- main entry
def generate(plan: Plan, cfg: GenerateConfig, out_dir: str | Path, real_manifest: Manifest | None = None,
             rank: int = 0, world_size: int = 1, progress: bool = True,
             dist: DistInfo | None = None, update: bool = False) -> Manifest | None:
    """Make the plan's synthetic images and return their manifest.

    Parameters
    ----------
    plan : Plan
        Cells with ``synthetic`` counts.
    cfg : GenerateConfig
        Backend, model, prompts, seed (see :mod:`synaug.generate.config`).
    out_dir : path
        Output root; rerunning with the same plan and config resumes.
    real_manifest : Manifest, optional
        Needed by img2img (guidance images).
    rank, world_size : int
        This process makes the images whose plan position ``% world_size == rank``.
        Ignored when ``dist`` is given (as the CLI does under accelerate / torchrun).
    progress : bool
        tqdm bar (images/s, ETA) and a per-cell summary at the end.
    dist : DistInfo, optional
        Process-group info from :func:`synaug.generate.dist.setup_distributed`; with a group,
        rank 0 merges after a barrier and every rank returns the merged manifest.
    update : bool
        ``out_dir`` may hold a generation of another plan or config: keep the images whose
        key still matches, make the others, remove those no longer planned (else: an error).

    Returns
    -------
    Manifest or None
        The merged synthetic manifest (``out_dir/synthetic.parquet``); ``None`` on a rank
        that cannot merge (several independent processes without a process group: rerun with
        one process once all have finished to merge).
    """
    dist = dist or DistInfo(rank, world_size, rank, group=False)
    if not 0 <= dist.rank < dist.world_size:
        raise SynaugError(f"rank {dist.rank} is outside world size {dist.world_size}")
    plan.check()
    out_dir = Path(out_dir)
    _check_config(cfg)
    prompt_fn = build_prompt_fn(plan, cfg)
    items = plan_items(plan, prompt_fn, cfg.seed)
    fp = fingerprint(plan, cfg)
    changed = _changed_since(out_dir, fp)
    if not update:
        _check_same_run(out_dir, fp)
    from .diffusers_backend import resolve_device

    device = resolve_device(cfg.device, dist.local_rank) if cfg.backend != "pool" else "cpu"
    gen = build_generator(plan, cfg, real_manifest, device)
    if hasattr(gen, "check_files"):  # the files a backend copies: all checked before any write
        gen.check_files()
    scorer = _build_scorer(cfg, device)
    keys = item_keys(items, cfg, gen)
    # rows written before images had keys count only for the same plan and config, and only as long
    # as no other one has been started in the folder since (run.json keeps that answer)
    legacy = changed is None and (_previous(out_dir) or {}).get("legacy_rows", True)
    # ---- everything above only reads; from here on files are written
    if dist.rank == 0:
        write_json_atomic(out_dir / "run.json", {**fp, "legacy_rows": legacy})
        save_resolved(cfg, out_dir / "generate.yaml")
        plan.write(out_dir / "plan.json")
    mine = [it for it in items if it.order % dist.world_size == dist.rank]
    _remove_stale_temps(out_dir, mine, dist.rank, dist.world_size)
    rows = _read_rows(out_dir)
    todo = [it for it in mine if not _is_done(out_dir, it, rows, keys[it.order], legacy, cfg.verify_on_resume)]
    if changed is not None and progress and dist.rank == 0:
        print(f"generate: {out_dir} holds a generation with {changed}: {len(mine) - len(todo)} of {len(mine)} "
              f"planned images still match and are kept, {len(todo)} to make; "
              f"{len(_unplanned(out_dir, items))} no longer planned are removed at the end", file=sys.stderr)
    _run_items(todo, len(mine), gen, scorer, cfg, out_dir, dist, progress, keys)
    barrier(dist)
    result = None
    if dist.rank == 0:
        result = merge(plan, items, out_dir, complete_required=dist.group or dist.world_size == 1,
                       keys=keys, legacy=legacy)
        if result is not None and progress:
            print_summary(plan, result)
    barrier(dist)
    if dist.rank != 0 and dist.group:
        result = Manifest.read(out_dir / MERGED)
    return result


def _check_config(cfg: GenerateConfig) -> None:
    if cfg.select.active:
        raise SynaugError("generate.select (more candidates, a selector) runs inside `synaug run`, which trains "
                          "its scorer on the run's data; `synaug generate` makes the plan's images as they come")
    if cfg.backend != "pool":
        from .diffusers_backend import check_model

        check_model(cfg)
    if cfg.clip_filter.enabled:
        if cfg.backend == "pool":
            raise SynaugError("clip_filter works with txt2img / img2img, not with the pool backend")
        if not cfg.clip_filter.model:
            raise SynaugError("clip_filter.enabled needs clip_filter.model (a CLIP id or folder)")


def _build_scorer(cfg: GenerateConfig, device: str):
    if not cfg.clip_filter.enabled:
        return None
    from .clip_filter import ClipScorer

    c = cfg.clip_filter
    return ClipScorer(c.model, c.template, device, c.local_files_only)


def _has_row(it: Item, rows: dict, key: str, legacy: bool) -> bool:
    """Whether ``rows`` record ``it`` as made with ``key`` (or, ``legacy``, without a key)."""
    r = rows.get(it.path)
    return r is not None and (r["item_key"] == key or legacy and not r["item_key"])


def _is_done(out_dir: Path, it: Item, rows: dict, key: str, legacy: bool, verify: bool) -> bool:
    p = out_dir / it.path
    if not _has_row(it, rows, key, legacy) or not p.is_file():
        return False
    return _decodes(p) if verify else True


def _unplanned(out_dir: Path, items: Sequence[Item]) -> list[Path]:
    """Image files in ``out_dir/images`` that no planned item has."""
    d = out_dir / "images"
    if not d.is_dir():
        return []
    planned = {it.path for it in items}
    return [p for p in d.rglob("*.png") if p.relative_to(out_dir).as_posix() not in planned]


def _remove_unplanned(out_dir: Path, items: Sequence[Item]) -> None:
    for p in _unplanned(out_dir, items):
        p.unlink(missing_ok=True)
    for d in (out_dir / "images").iterdir() if (out_dir / "images").is_dir() else []:
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()


def _run_items(todo: list[Item], n_mine: int, gen, scorer, cfg: GenerateConfig, out_dir: Path,
               dist: DistInfo, progress: bool, keys: Sequence[str]) -> None:
    from tqdm.auto import tqdm

    part = _next_part(out_dir, dist.rank)
    desc = "generate" + (f" [rank {dist.rank}/{dist.world_size}]" if dist.world_size > 1 else "")
    bar = tqdm(total=n_mine, initial=n_mine - len(todo), unit="img", desc=desc, disable=not progress,
               position=dist.rank if dist.world_size > 1 else None, dynamic_ncols=True, file=sys.stderr)
    write_batch = getattr(gen, "write_batch", 0)
    step = max(cfg.batch_size, write_batch)   # batch_size only sets model batches
    # copies (write_batch) are ~0.1 ms each: one sync per part instead of an fsync per file (5x the copy)
    per_file = not write_batch
    try:
        for start in range(0, len(todo), step):
            batch = todo[start: start + step]
            images, seeds = _make_batch(batch, gen, scorer, cfg)
            rows = []
            for it, img, seed in zip(batch, images, seeds):
                write_bytes_atomic(out_dir / it.path, png_bytes(to_square(img, cfg.resolution, cfg.resize_filter)),
                                   durable=per_file)
                rows.append({"path": it.path, "seed": int(seed), "prompt": it.prompt, **provenance(gen, it),
                             "item_key": keys[it.order]})
            if not per_file:
                flush_to_disk()
            # rows only after their images are on disk: a row always means a complete file
            _write_part(out_dir, dist.rank, part, rows)
            part += 1
            bar.update(len(batch))
    finally:
        bar.close()


def provenance(gen, it: Item) -> dict:
    """``generator``, ``source_file`` and ``adapter`` (+ sha256) of one image: the backend's name,
    no source file, no adapter, unless the backend records more (the pool names the image it
    copied and who made it; fitted adapters name their file and the prompt they really used)."""
    base = {"generator": gen.name, "source_file": "", "adapter": "", "adapter_sha256": ""}
    return {**base, **gen.provenance(it)} if hasattr(gen, "provenance") else base


def _make_batch(batch: list[Item], gen, scorer, cfg: GenerateConfig):
    seeds = [it.seed for it in batch]
    images = gen.generate(batch, seeds)
    if len(images) != len(batch):
        raise RuntimeError(f"generator {gen.name} returned {len(images)} images for {len(batch)} prompts")
    if scorer is None:
        return images, seeds
    c = cfg.clip_filter
    scores = scorer.score(images, [it.cell.class_name for it in batch])
    for attempt in range(1, c.max_retries + 1):
        low = [j for j, s in enumerate(scores) if s < c.threshold]
        if not low:
            break
        retry = [batch[j] for j in low]
        new_seeds = [derive_seed(cfg.seed, it.cell.key, it.index, attempt=attempt) for it in retry]
        new_images = gen.generate(retry, new_seeds)
        new_scores = scorer.score(new_images, [it.cell.class_name for it in retry])
        for j, img, s, sd in zip(low, new_images, new_scores, new_seeds):
            if s > scores[j]:  # keep the best attempt; its seed is what gets recorded
                images[j], scores[j], seeds[j] = img, s, sd
    return images, seeds


# ---------------------------------------------------------------------------- merge
def merge(plan: Plan, items: Sequence[Item], out_dir: Path, complete_required: bool = True,
          keys: Sequence[str] | None = None, legacy: bool = True) -> Manifest | None:
    """Join shard rows into ``out_dir/synthetic.parquet`` in plan order; delete the parts and
    the images no longer planned.

    Raises (or returns None when ``complete_required`` is false) if a planned image is missing
    (no row, or, with ``keys``, no row made with its key).
    """
    rows = _read_rows(out_dir)
    missing = [it for it in items if (it.path not in rows if keys is None else not
                                      _has_row(it, rows, keys[it.order], legacy))
               or not (out_dir / it.path).is_file()]
    if missing:
        if not complete_required:
            print(f"synaug: {len(missing)} of {len(items)} planned images are not made yet (other ranks); "
                  "when all ranks are done, rerun once with one process to merge", file=sys.stderr)
            return None
        raise SynaugError(f"{len(missing)} of {len(items)} planned images are missing "
                          f"(first: {missing[0].path}); rerun the same command to resume")
    records = []
    for it in items:
        r = rows[it.path]
        c = it.cell
        records.append({"path": it.path, "label": c.label, "class_name": c.class_name, "group": c.group,
                        "group_name": c.group_name if c.group >= 0 else "", "split": "train",
                        "source": "synthetic", "prompt": r["prompt"], "seed": int(r["seed"]),
                        "generator": r["generator"], "source_file": r["source_file"],
                        "item_key": keys[it.order] if keys is not None else r["item_key"],
                        **({"adapter": r["adapter"], "adapter_sha256": r["adapter_sha256"]} if r["adapter"] else {})})
    m = Manifest.from_records(records, plan.classes, {"synthetic": out_dir}, plan.groups)
    m.write(out_dir / MERGED)
    for p in _part_files(out_dir):
        p.unlink(missing_ok=True)
    _remove_unplanned(out_dir, items)
    return m


def print_summary(plan: Plan, m: Manifest) -> None:
    """Images per cell: planned vs present in the manifest."""
    from rich.console import Console
    from rich.table import Table

    made = m.df.groupby(["label", "group"]).size().to_dict() if len(m) else {}
    gens = ", ".join(sorted(m.df["generator"].unique())) if len(m) else "-"
    t = Table(title=f"synthetic images: {len(m)} ({gens})")
    for col in ("cell", "class", "group", "planned", "made"):
        t.add_column(col, justify="right" if col in ("planned", "made") else "left")
    for c in plan.cells:
        t.add_row(c.key, c.class_name, c.group_name, str(c.synthetic), str(made.get((c.label, c.group), 0)))
    Console(stderr=True).print(t)
