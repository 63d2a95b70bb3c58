"""The ``fidec`` command line. Each sub-command lives in ``fidec_gym/commands/<name>.py`` and exposes
``register(subparsers)``; heavy imports stay inside the command functions so that ``fidec --help`` is instant.

Errors: a :class:`fidec_gym.errors.FidecError` (bad input, missing data, unusable results directory) is printed as
one message that names the fix, exit code 2; a full disk is reported the same way (exit code 28). Anything else is a
bug and keeps its traceback. ``--debug`` shows the traceback of every error.

Ctrl-C and SIGTERM stop every command the same way (their ``except KeyboardInterrupt`` and ``finally`` blocks run, so
runs are marked resumable and worker processes stop); the exit code is 128 + the signal (130, 143).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from fidec_gym import __version__
from fidec_gym.errors import DiskFullError, FidecError, as_disk_full
from fidec_gym.processes import exit_code_of, stop_on_signals

COMMAND_MODULES = ("tasks", "leaderboard", "data", "train", "bench", "toy", "doctor", "experts")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fidec", description="fidec-gym: offline-RL tasks, agents and leaderboards.")
    parser.add_argument("--version", action="version", version=f"fidec-gym {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of every error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"fidec_gym.commands.{name}").register(subparsers)
    return parser


def _output_dir(args) -> object:
    """The directory a command writes to (named in disk-full messages)."""
    return getattr(args, "results_dir", None) or getattr(args, "out", None)


def _disk_full(error: BaseException, args=None) -> DiskFullError | None:
    """A full disk seen as an OSError (ENOSPC) or as SQLite's "database or disk is full"."""
    return as_disk_full(error, None if args is None else _output_dir(args))


def _interrupted_advice(args, argv: list[str]) -> str:
    """What to do after Ctrl-C, per command; every hint works as written."""
    if args.command == "train":
        return "the run is resumable: run the same command " + ("again" if "--resume" in argv else "with --resume")
    if args.command == "data" and getattr(args, "data_command", "") == "generate":
        return "nothing was written; run the same command again to start over"
    if args.command in ("leaderboard", "quickstart", "toy-study"):
        return "unfinished runs are resumable: run the same command again to continue"
    return "run the same command again"


def _resume_hint(args, argv: list[str]) -> str:
    if args.command == "train" and "--resume" not in argv:
        return "; for `fidec train`, add --resume to continue from the last checkpoint"
    return ""


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        with stop_on_signals():  # SIGTERM stops a command exactly as Ctrl-C does
            result = args.func(args)
    except KeyboardInterrupt as interrupt:
        print(f"fidec {args.command}: interrupted; {_interrupted_advice(args, argv)}", file=sys.stderr)
        return exit_code_of(interrupt)
    except FidecError as error:
        if args.debug:
            raise
        hint = _resume_hint(args, argv) if isinstance(error, DiskFullError) else ""
        print(f"fidec {args.command}: error: {error}{hint}", file=sys.stderr)
        return error.exit_code
    except Exception as error:
        full = _disk_full(error, args)
        if full is None or args.debug:
            raise
        print(f"fidec {args.command}: error: {full}{_resume_hint(args, argv)}", file=sys.stderr)
        return full.exit_code
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
