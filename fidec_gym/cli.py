"""The ``fidec`` command line. Each sub-command lives in ``fidec_gym/commands/<name>.py`` and exposes
``register(subparsers)``; heavy imports stay inside the command functions so that ``fidec --help`` is instant.

Errors: a :class:`fidec_gym.errors.FidecError` (bad input, missing data, unusable results directory) is printed as
one message that names the fix, exit code 2; a full disk is reported the same way (exit code 28). Anything else is a
bug and keeps its traceback. ``--debug`` shows the traceback of every error.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from fidec_gym import __version__
from fidec_gym.errors import DiskFullError, FidecError

COMMAND_MODULES = ("tasks", "leaderboard", "data", "train", "bench", "toy", "doctor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fidec", description="fidec-gym: offline-RL tasks, agents and leaderboards.")
    parser.add_argument("--version", action="version", version=f"fidec-gym {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of every error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"fidec_gym.commands.{name}").register(subparsers)
    return parser


def _disk_full(error: BaseException) -> DiskFullError | None:
    """A full disk seen as an OSError (ENOSPC) or as SQLite's "database or disk is full"."""
    import sqlite3

    if isinstance(error, DiskFullError):
        return error
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        where = f" while writing {error.filename}" if error.filename else ""
        return DiskFullError(
            f"no space left on the device{where}; free space there and run the same command again "
            "(training resumes from its last checkpoint)"
        )
    if isinstance(error, sqlite3.OperationalError) and "disk is full" in str(error):
        return DiskFullError(
            "the results store cannot grow: the disk is full; free space in the results directory "
            "and run the same command again (finished runs are kept, unfinished ones resume)"
        )
    return None


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print(f"fidec {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except FidecError as error:
        if args.debug:
            raise
        print(f"fidec {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except Exception as error:
        full = _disk_full(error)
        if full is None or args.debug:
            raise
        print(f"fidec {args.command}: error: {full}", file=sys.stderr)
        return full.exit_code
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
