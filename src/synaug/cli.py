"""Thin command-line front: each stage module registers its own sub-command.

Every ``SynaugError`` (bad input, bad config) is printed as one line and exits with 2.
``synaug [--threads N|auto] [--omp-wait auto|passive|active|unset] COMMAND ...`` sets the CPU thread
count and OpenMP wait policy before torch is imported (``synaug.threads``).
"""
from __future__ import annotations

import argparse
import errno
import importlib
import sys

from .errors import SynaugError

# module path -> it exposes ``register(subparsers)``; order is the order in --help
COMMAND_MODULES = [
    "synaug.inspect",
    "synaug.data.read",
    "synaug.plan",
    "synaug.generate.cli",
    "synaug.generate.fit.cli",
    "synaug.train.cli",
    "synaug.run",
    "synaug.demo",
    "synaug.report.cli",
    "synaug.sweep",
]


# commands that run parallel CPU work: only they sample the load for the OpenMP wait policy
_PARALLEL_COMMANDS = {"train", "finetune", "evaluate", "run", "demo", "generate", "fit"}

# OS errors the user fixes (free space, quota, permissions, a path that is not there or not
# what it should be): one line, exit 2, no traceback
_USER_OS_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT,
                   errno.ENOTDIR, errno.EISDIR}


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, like every other synaug error."""

    def error(self, message: str):
        self.exit(2, f"synaug: error: {message} (see '{self.prog} --help')\n")


# command -> the module that registers it: `synaug plan ...` imports only synaug.plan (no torch:
# ~0.5 s instead of ~2.5 s to start). --help, or a command missing here, imports every module.
_COMMAND_HOME = {"inspect": "synaug.inspect", "manifest": "synaug.data.read", "plan": "synaug.plan", "generate": "synaug.generate.cli",
                 "fit": "synaug.generate.fit.cli", "train": "synaug.train.cli", "finetune": "synaug.train.cli", "evaluate": "synaug.train.cli",
                 "run": "synaug.run", "demo": "synaug.demo", "report": "synaug.report.cli",
                 "sweep": "synaug.sweep"}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``synaug`` parser; with ``command`` only the module registering it is imported (if known)."""
    parser = _Parser(
        prog="synaug",
        description="SYNAuG: uniformize an imbalanced image dataset with generated images, "
                    "train with Mixup, fine-tune the last layer on balanced real data.")
    parser.add_argument("--version", action="version", version=f"synaug {_version()}")
    parser.add_argument("--threads", metavar="N|auto", default=None,
                        help="CPU threads for torch (default: $SYNAUG_THREADS, else auto = one per core)")
    parser.add_argument("--omp-wait", choices=["auto", "passive", "active", "unset"], default=None,
                        help="OpenMP wait policy (default: $SYNAUG_OMP_WAIT, else auto = passive unless "
                             "OMP_WAIT_POLICY is set): passive keeps throughput up when other processes "
                             "share the cores")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    home = _COMMAND_HOME.get(command) if command else None
    first = [home] if home in COMMAND_MODULES else []
    for mod in first + [m for m in COMMAND_MODULES if m not in first]:
        if first and command in sub.choices:
            break
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod or mod.startswith(str(e.name)):
                continue  # stage not built yet
            raise
        m.register(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("synaug")
    except PackageNotFoundError:
        return "unknown"


def _global_options(argv: list[str]) -> tuple[dict, int]:
    """``--threads`` / ``--omp-wait`` given before the command, and the command's position."""
    opts, i = {}, 0
    while i < len(argv) and argv[i].startswith("-"):
        key, _, val = argv[i].partition("=")
        if key in ("--threads", "--omp-wait"):
            if not val and i + 1 < len(argv):
                i += 1
                val = argv[i]
            opts[key[2:].replace("-", "_")] = val
        i += 1
    return opts, i


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    opts, pos = _global_options(argv)
    try:  # before any command module is imported: some import torch, which starts OpenMP
        from .threads import configure

        command = argv[pos] if pos < len(argv) else None
        probe = command in _PARALLEL_COMMANDS and not {"-h", "--help"} & set(argv)
        configure(opts.get("threads"), opts.get("omp_wait"), probe=probe)
        from .allocator import keep_freed_memory

        keep_freed_memory()
    except SynaugError as e:
        print(f"synaug: error: {e}", file=sys.stderr)
        return 2
    parser = build_parser(argv[pos] if pos < len(argv) else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except SynaugError as e:
        print(f"synaug: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in _USER_OS_ERRORS:
            raise
        where = f" ({e.filename})" if e.filename else ""
        print(f"synaug: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("synaug: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
