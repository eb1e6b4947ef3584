"""A committed ledger of finished runs' metrics, so evidence gathered over several sessions adds up.

Run folders (checkpoints, manifests) are large and stay out of git; a machine that loses them loses
the seeds they hold. A *record* keeps what a results table reads from one finished run (top-1,
many / medium / few, validation scores, minutes) with where it came from: the digest of the run's
resolved configuration (its ``config.yaml`` without name and descriptions; the seed is part of it),
the commit that computed each stage (from the run's stage records), and the synaug commit, CPU,
torch and date of the recording.

Records are addressed by that digest, not by row name: a table asks for the digest of the
configuration the code builds for a row today and takes a record (or a run folder) with that digest,
whatever it was called when it ran. A record of an older configuration is never taken for today's
row. The digest covers the configuration, not the code: a code change that moves results without
touching the configuration is visible only through the commits in the record.

A record is keyed by its digest **and the precision its training ran in** (``amp``: the resolved
``train.amp`` of the run's ``train/summary.json``, ``off`` = fp32): the default ``amp: auto`` is one
configuration that trains in bf16 on a CPU with bf16 units and in fp32 elsewhere, so the same digest
names two computations. A table takes a record only in the precision the row would run in here.

Format: JSON ``{"version": 3, "records": [{"config_sha", "amp", "seed", "row", "metrics": {...},
"provenance": {...}}, ...]}``, sorted by (row, seed), written atomically. Version-2 files (no ``amp``)
are read as fp32: every version-2 record was made on CPUs without bf16 units, where ``auto`` is fp32.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import SynaugError
from ..io import write_text_atomic
from ..provenance import provenance
from ..stages import fingerprint

VERSION = 3
#: versions :func:`load` reads (2: before records carried ``amp``; all fp32)
READS = (2, 3)
#: configuration keys that only name or describe a run
NOT_RESULTS = ("name", "description", "generator_note")


def config_sha(resolved: dict) -> str:
    """Digest of a run's resolved configuration (a ``config.yaml`` / ``dump(RunConfig)``) without
    its name and descriptions."""
    return fingerprint({k: v for k, v in resolved.items() if k not in NOT_RESULTS})


def folder_sha(run_dir: Path) -> str | None:
    """:func:`config_sha` of a run folder's ``config.yaml`` (None without one)."""
    import yaml

    p = Path(run_dir) / "config.yaml"
    return config_sha(yaml.safe_load(p.read_text())) if p.is_file() else None


def folder_amp(run_dir: Path) -> str:
    """The precision a run folder's training used (``off`` = fp32, ``bf16``, ...), from its
    ``train/summary.json``; ``off`` for a run without a training summary."""
    p = Path(run_dir) / "train" / "summary.json"
    try:
        return (json.loads(p.read_text()).get("amp") or {}).get("used", "off")
    except (OSError, ValueError):
        return "off"


def key(rec: dict) -> tuple[str, str]:
    """What addresses a record: ``(config_sha, amp)``."""
    return rec["config_sha"], rec.get("amp", "off")


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
        if data.get("version") not in READS or not all({"seed", "row", "config_sha", "metrics"} <= set(r) for r in recs):
            raise ValueError("unexpected layout")
    except (ValueError, KeyError, TypeError) as e:
        raise SynaugError(f"{path}: not a records file of version {' or '.join(map(str, READS))} ({e})") from None
    return [{**r, "amp": r.get("amp", "off")} for r in recs]


def merge(path: Path, new: list[dict]) -> tuple[int, int]:
    """Add ``new`` records to ``path``; a record of the same configuration digest and precision
    replaces the old one (the same run measured again). Returns (added, replaced)."""
    path = Path(path)
    old = {key(r): r for r in load(path)}
    added = sum(key(r) not in old for r in new)
    old.update({key(r): r for r in new})
    path.parent.mkdir(parents=True, exist_ok=True)
    recs = sorted(old.values(), key=lambda r: (r["row"], r["seed"], r["amp"], r["config_sha"]))
    write_text_atomic(path, json.dumps({"version": VERSION, "records": recs}, indent=1) + "\n")
    return added, len(new) - added


def by_key(recs: list[dict]) -> dict[tuple[str, str], dict]:
    """``{(config_sha, amp): record}``."""
    return {key(r): r for r in recs}


__all__ = ["config_sha", "folder_sha", "folder_amp", "key", "run_provenance", "load", "merge", "by_key"]
