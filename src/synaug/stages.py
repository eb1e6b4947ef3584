"""Stage caching for ``synaug run``: a stage is skipped when the hash of its inputs matches the
record it left after finishing, and its outputs still exist. Records are written last and
atomically, so a killed stage is simply run again (each stage resumes its own partial work)."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

from .io import write_json_atomic
from .provenance import provenance


def fingerprint(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


class Stages:
    def __init__(self, run_dir: Path, log: Callable[[str], None] = print, create: bool = True):
        self.dir = Path(run_dir) / "stages"
        if create:
            self.create()
        self.log = log
        self.timings: dict[str, float] = {}  # seconds of the stages that ran in this invocation
        self.visited: list[str] = []         # every stage this invocation asked for, run or skipped

    def create(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def done(self, name: str, key: str, outputs: list[Path]) -> bool:
        return self.why(name, key, outputs) is None

    def why(self, name: str, key: str, outputs: list[Path]) -> str | None:
        """Why stage ``name`` must run (None: it is up to date)."""
        rec = self.dir / f"{name}.json"
        if not rec.is_file():
            return "first run"
        try:
            saved = json.loads(rec.read_text())
        except json.JSONDecodeError:
            return "its record is damaged"
        if saved.get("key") != key:
            return "its config or inputs changed since the last run"
        missing = [Path(p).name for p in outputs if not Path(p).exists()]
        if missing:
            return f"output {missing[0]} is missing"
        return None

    def run(self, name: str, key: str, outputs: list[Path], fn: Callable[[], Any], note: str = "") -> bool:
        """Run ``fn`` unless cached; returns True when it ran. ``note`` is added to the log line."""
        reason = self.why(name, key, outputs)
        self.visited.append(name)
        if reason is None:
            self.log(f"[{name}] up to date, skipped")
            return False
        self.log(f"[{name}] running ({note or reason})")
        t0 = time.perf_counter()
        fn()
        self.timings[name] = round(time.perf_counter() - t0, 2)
        write_json_atomic(self.dir / f"{name}.json",
                          {"key": key, "outputs": [str(p) for p in outputs], "seconds": self.timings[name],
                           "made_by": provenance()})
        return True

    def seconds(self) -> dict[str, float]:
        """Seconds each stage of this invocation took when it last ran, skipped ones included (their
        record keeps the time), so a cached re-run reports what the result cost, not ~0. Stages
        recorded before the record kept a time are left out."""
        out = {}
        for name in self.visited:
            if name in self.timings:
                out[name] = self.timings[name]
                continue
            try:
                sec = json.loads((self.dir / f"{name}.json").read_text()).get("seconds")
            except (OSError, json.JSONDecodeError):
                sec = None
            if sec is not None:
                out[name] = sec
        return out
