"""The project's exceptions. Every error a user can cause derives from :class:`FidecError`; its message names what is
wrong and how to fix it. The ``fidec`` command prints those messages without a traceback and exits non-zero; any
other exception is a bug and keeps its traceback.

Each class also derives from the matching builtin (``ValueError``, ``KeyError``, ``FileNotFoundError`` ...), so code
that catches the builtin keeps working.
"""

from __future__ import annotations


class FidecError(Exception):
    """Base of every error caused by input, configuration, data or the results directory."""

    exit_code = 2

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else self.__class__.__name__


class ConfigError(FidecError, ValueError):
    """A bad setting: unknown key, wrong type or out-of-range value (run, agent, preset or command-line option)."""


class UnknownNameError(FidecError, KeyError):
    """An unknown name (agent, preset, config key); the message lists close valid names."""


class DataError(FidecError, ValueError):
    """A dataset that is missing, corrupt, mis-shaped or holds non-finite values."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A dataset file that is not where it was looked for; the message lists the places and how to get it."""


class ResultsError(FidecError, ValueError):
    """A results directory, store or checkpoint that cannot be used as asked."""


class ResultsPermissionError(ResultsError, PermissionError):
    """A results directory that cannot be created or written."""


class DiskFullError(ResultsError, OSError):
    """No space left while writing results; what was written last is kept and the run can be resumed."""

    exit_code = 28


class MissingDependencyError(FidecError, ImportError):
    """An optional package that a requested feature needs is not installed; the message gives the pip command."""


class ResultsNotFoundError(ResultsError, FileNotFoundError):
    """No results (store, run or checkpoint) where the command looked; the message says how to make them."""


def as_disk_full(error: BaseException, where: object = None) -> DiskFullError | None:
    """A full disk seen as an OSError (ENOSPC) or as SQLite's "database or disk is full", as a
    :class:`DiskFullError` naming ``where`` (the directory being written); None for any other error."""
    import errno
    import sqlite3

    if isinstance(error, DiskFullError):
        return error
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        place = error.filename or where
        return DiskFullError(
            f"no space left on the device{f' while writing {place}' if place else ''}; free space on that disk "
            f"{f'(the directory {where}) ' if where else ''}and run the same command again"
        )
    if isinstance(error, sqlite3.OperationalError) and "disk is full" in str(error):
        return DiskFullError(
            f"the results store{f' in {where}' if where else ''} cannot grow: the disk is full; free space on that "
            "disk and run the same command again (finished runs are kept, unfinished ones resume)"
        )
    return None
