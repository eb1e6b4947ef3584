"""A committed ledger of finished runs' metrics, so evidence gathered over several sessions adds up.

Run folders (checkpoints, manifests) are large and stay out of git; a machine that loses them loses
the seeds they hold. A *record* keeps what a results table reads from one finished run (top-1,
many / medium / few, validation scores, minutes) with where it came from: the row's configuration
digest, the commit that computed each stage (from the run's stage records), and the synaug
commit, CPU, torch and date of the recording. A table may take a (seed, row) from a record
when that run's folder is absent — but only if the record's configuration digest equals the digest
of the configuration the code builds for that row today; a record of another configuration is
reported and left out. The digest covers the configuration, not the code: a change in the code that
moves results without touching the configuration is visible only through the commit in the record.

Format: JSON ``{"version": 1, "records": [{"seed", "row", "config_sha", "metrics": {...},
"provenance": {...}}, ...]}``, sorted by (row, seed), written atomically.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import SynaugError
from ..provenance import provenance
from ..stages import fingerprint

VERSION = 1
#: configuration keys that only name or describe a run
NOT_RESULTS = ("name", "description", "generator_note")


def config_sha(cfg: dict) -> str:
    """Digest of a row's input configuration without its name and descriptions."""
    return fingerprint({k: v for k, v in cfg.items() if k not in NOT_RESULTS})


def run_provenance(run_dir: Path) -> dict:
    """This process's :func:`synaug.provenance.provenance` (the code and machine that wrote the
    record) and ``stages``: the commit each stage of the run was computed by, from its stage records
    (``unknown`` for stages recorded before stage records carried it)."""
    stages = {}
    for f in sorted((Path(run_dir) / "stages").glob("*.json")):
        try:
            made = json.loads(f.read_text()).get("made_by") or {}
        except (ValueError, OSError):
            made = {}
        stages[f.stem] = made.get("commit", "unknown")
    return {**provenance(), "stages": stages}


def load(path: Path) -> list[dict]:
    """The records in ``path`` (none when it does not exist); a malformed file is an error."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
        recs = data["records"]
        if data.get("version") != VERSION or not all({"seed", "row", "config_sha", "metrics"} <= set(r) for r in recs):
            raise ValueError("unexpected layout")
    except (ValueError, KeyError, TypeError) as e:
        raise SynaugError(f"{path}: not a records file of version {VERSION} ({e})") from None
    return recs


def merge(path: Path, new: list[dict]) -> tuple[int, int]:
    """Add ``new`` records to ``path``; a record of the same (seed, row) and configuration replaces
    the old one; one of another configuration is an error (two experiments under one name).
    Returns (added, replaced)."""
    path = Path(path)
    old = {(r["row"], r["seed"]): r for r in load(path)}
    added = replaced = 0
    for r in new:
        k = (r["row"], r["seed"])
        if k in old and old[k]["config_sha"] != r["config_sha"]:
            raise SynaugError(f"{path}: row {r['row']!r} seed {r['seed']} is already recorded with another "
                              f"configuration ({old[k]['config_sha']} vs {r['config_sha']}); "
                              "write these records to another file")
        replaced += k in old
        added += k not in old
        old[k] = r
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"version": VERSION, "records": [old[k] for k in sorted(old)]}, indent=1) + "\n")
    os.replace(tmp, path)
    return added, replaced


def usable(recs: list[dict], sha_of) -> tuple[dict, list[str]]:
    """``{(row, seed): record}`` of the records whose digest is ``sha_of(row, seed)`` today, and a
    line for each one left out."""
    keep, dropped = {}, []
    for r in recs:
        want = sha_of(r["row"], r["seed"])
        if want == r["config_sha"]:
            keep[(r["row"], r["seed"])] = r
        else:
            dropped.append(f"{r['row']} seed {r['seed']} (recorded configuration {r['config_sha']}, today's "
                           f"{want or 'unknown row'})")
    return keep, dropped


__all__ = ["config_sha", "run_provenance", "load", "merge", "usable"]
