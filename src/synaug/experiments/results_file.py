"""Update some sections of a generated results file (``reproduce_cpu.py --merge``).

A full reproduction takes hours; re-running one experiment should not drop the others' sections.
The merged file keeps the old header and adds one line naming what was updated, when, by which
command; a section of the new file replaces the one with the same heading, a new one goes before
"Where the runs are"; the Setup lines are the union of both.
"""
from __future__ import annotations

SETUP, WHERE = "## Setup", "## Where the runs are"


def split_sections(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """(lines before the first ``## `` heading, {heading: its lines, heading included}) in order."""
    head: list[str] = []
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = line.strip()
            sections[current] = [line]
        elif current is None:
            head.append(line)
        else:
            sections[current].append(line)
    return head, sections


def _updated_line(new_head: list[str]) -> str:
    """"- Updated by <the new file's command>: <its date line>"."""
    cmd = next((l.split("Command:", 1)[1].strip() for l in new_head if "Command:" in l), "an invocation")
    date = next((l.removeprefix("- Date:").strip() for l in new_head if l.startswith("- Date:")), "")
    return f"- Updated by {cmd}: {date}" if date else f"- Updated by {cmd}."


def merge(old: str, new: str) -> str:
    """``old`` with the sections of ``new`` put in (see the module docstring)."""
    old_head, old_secs = split_sections(old)
    new_head, new_secs = split_sections(new)
    while old_head and not old_head[-1].strip():
        old_head.pop()
    head = old_head + [_updated_line(new_head), ""]
    out = dict(old_secs)
    if SETUP in new_secs:
        have = out.get(SETUP, [SETUP, ""])
        extra = [l for l in new_secs[SETUP][1:] if l.strip() and l not in have]
        body = [l for l in have if l.strip() and l != SETUP]
        out[SETUP] = [SETUP, "", *body, *extra, ""]
    for title, lines in new_secs.items():
        if title in (SETUP, WHERE):
            continue
        if title in out:
            out[title] = lines
        else:  # insert before "Where the runs are"
            where = out.pop(WHERE, None)
            out[title] = lines
            if where is not None:
                out[WHERE] = where
    if WHERE not in out and WHERE in new_secs:
        out[WHERE] = new_secs[WHERE]
    return "\n".join(head + [l for lines in out.values() for l in lines]).rstrip("\n") + "\n"


__all__ = ["merge", "split_sections"]
