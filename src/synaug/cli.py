"""Thin command-line front: each stage module registers its own sub-command.

Every ``SynaugError`` (bad input, bad config) is printed as one line and exits with 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import SynaugError

# module path -> it exposes ``register(subparsers)``; order is the order in --help
COMMAND_MODULES = [
    "synaug.inspect",
    "synaug.plan",
    "synaug.generate.cli",
    "synaug.train.cli",
    "synaug.run",
    "synaug.report.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synaug",
        description="SYNAuG: uniformize an imbalanced image dataset with generated images, "
                    "train with Mixup, fine-tune the last layer on balanced real data.")
    parser.add_argument("--version", action="version", version=f"synaug {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except SynaugError as e:
        print(f"synaug: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("synaug: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
