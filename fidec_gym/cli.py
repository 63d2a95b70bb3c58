"""The ``fidec`` command line. Each sub-command lives in ``fidec_gym/commands/<name>.py`` and exposes
``register(subparsers)``; heavy imports stay inside the command functions so that ``fidec --help`` is instant."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = ("tasks", "leaderboard", "data", "train", "bench", "toy")


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fidec", description="fidec-gym: offline-RL tasks, agents and leaderboards.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"fidec_gym.commands.{name}").register(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (UserError, KeyError, ValueError, FileNotFoundError, PermissionError) as error:
        # Errors raised on bad input carry a message that names the problem and the fix.
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"fidec {args.command}: error: {message}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
