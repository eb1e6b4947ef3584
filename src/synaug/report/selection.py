"""The report's section on a selection from more candidates (``generate.select``): the scorer,
kept vs rejected counts and scores per class, kept vs rejected examples."""
from __future__ import annotations

import json
from pathlib import Path


def selection_section(run_dir: Path) -> tuple[list[str], list[tuple[str, list[str], list[list[str]]]], Path | None]:
    """``(intro lines, [(title, header, rows)], examples png)``; empty when the run did not select."""
    f = Path(run_dir) / "select" / "selection.json"
    if not f.is_file():
        return [], [], None
    s = json.loads(f.read_text())
    intro = [f"Selector: {s['selector']}; {s['kept']} of {s['kept'] + s['rejected']} candidates kept "
             f"({s['candidates_factor']} candidates per needed image).",
             f"Scorer: {s['scorer'] or 'none (random selection)'}."]
    if s.get("rounds"):
        k = s["rounds"]
        intro[1] = (f"Rotation, no scorer: every candidate kept, in {k} rounds of the needed number per class; "
                    f"epoch e trains on the real images and round e mod {k} (round 0 = the images a run without "
                    "selection uses).")
        rows = [[name, str(r["candidates"]), str(r["kept"] // k), str(k)] for name, r in s["per_class"].items()]
        return intro, [("Synthetic candidates in rotation", ["class", "candidates", "per epoch", "rounds"], rows)], None
    conf = any("confidence_kept" in r for r in s["per_class"].values())
    header = ["class", "candidates", "kept", "rejected", "score kept", "score rejected"]
    if conf:
        header += ["log-prob. kept", "log-prob. rejected"]
    fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    rows = []
    for name, r in s["per_class"].items():
        row = [name, str(r["candidates"]), str(r["kept"]), str(r["rejected"]), fmt(r["score_kept"]),
               fmt(r["score_rejected"])]
        if conf:
            row += [fmt(r.get("confidence_kept")), fmt(r.get("confidence_rejected"))]
        rows.append(row)
    ex = f.parent / s["examples"] if s.get("examples") else None
    return intro, [("Selection from candidates: kept vs rejected per class", header, rows)], ex
