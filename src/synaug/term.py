"""Terminal output: rich tables that stay whole when stdout is a file or a pipe."""
from __future__ import annotations

import sys

# Without a terminal rich assumes 80 columns and shortens wide cells to "wb-…" / "50.…";
# a file or a pipe gets every cell in full (tables are as wide as their content).
PIPE_WIDTH = 10_000


def console(file=None):
    """A ``rich.console.Console`` on ``file`` (default stdout) that never cuts a table when
    the output is not a terminal."""
    from rich.console import Console

    out = file or sys.stdout
    if out.isatty():
        return Console(file=file)
    return Console(file=file, width=PIPE_WIDTH, soft_wrap=True)
