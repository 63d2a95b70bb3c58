"""Process lifetimes: Ctrl-C and SIGTERM stop a program and its worker processes within seconds, marking unfinished
work resumable, and no worker outlives its parent.

* :class:`Interrupted` is the ``KeyboardInterrupt`` raised for SIGINT and SIGTERM; it carries the signal, so the
  command line exits with 128 + signal (130 for Ctrl-C, 143 for SIGTERM).
* :func:`stop_on_signals` (the main thread of a program): SIGTERM raises :class:`Interrupted` exactly as Ctrl-C
  does, so every ``except KeyboardInterrupt`` (which marks runs resumable) and ``finally`` runs for both.
* :func:`worker_setup` (first thing in a worker process): SIGINT is ignored, because a Ctrl-C at the terminal
  reaches every process of the foreground group and the parent decides what happens; SIGTERM raises
  :class:`Interrupted` once (the worker cleans up and exits); and a thread ends the worker when its parent dies,
  even by ``kill -9``.
* :class:`WorkerPool`: spawned workers running one function on items one at a time. It knows which worker runs
  which item, so a worker that dies is reported for its own item (and replaced) instead of breaking the pool; an
  interrupt stops every worker (SIGTERM, a grace period, then SIGKILL; a second interrupt skips the grace).

Why a thread polling ``os.getppid()`` rather than ``prctl(PR_SET_PDEATHSIG)``: the kernel sends the death signal
when the *thread* that created the child exits, not the process, so a worker created by a pool's helper thread
would be killed while its parent is alive; ``getppid()`` changes only when the parent process is gone, and it works
on every POSIX system.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

_HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


# The signal that asked this process to stop, once one has (set by the handlers below).
_stop_signal: int | None = None


def interrupt_of(error: BaseException) -> KeyboardInterrupt | None:
    """The interrupt behind ``error``: ``error`` itself when it is one; an :class:`Interrupted` when it was raised
    after SIGINT or SIGTERM asked this process to stop (a clean-up cut short by the signal can fail in turn, e.g. with
    a closed file), so that the work is left resumable and the process stops instead of reporting a failure; else
    None."""
    if isinstance(error, KeyboardInterrupt):
        return error
    if _stop_signal is not None:
        return Interrupted(_stop_signal)
    return None


def exit_code_of(interrupt: BaseException) -> int:
    """The exit status for an interrupt: 128 + its signal (130 for a plain KeyboardInterrupt)."""
    return getattr(interrupt, "exit_code", 128 + signal.SIGINT)


def _deliver_later(signum: int) -> None:
    """Send ``signum`` to this process again in a moment, once the code that swallowed it has returned."""
    threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()


def _redeliver_swallowed_interrupts(unraisable) -> None:
    """``sys.unraisablehook`` while signals raise :class:`Interrupted`.

    Python runs signal handlers between the bytecodes of whatever Python code runs, which includes garbage-collector
    callbacks (JAX registers one), weakref callbacks and ``__del__`` methods. An exception raised there never reaches
    the program: Python hands it to ``sys.unraisablehook`` and carries on. For an interrupt that would lose Ctrl-C or
    SIGTERM, so the signal is sent again once that code has returned; anything else goes to the previous hook.
    """
    if isinstance(unraisable.exc_value, Interrupted):
        _deliver_later(unraisable.exc_value.signum)
    else:
        _previous_unraisablehook(unraisable)


_previous_unraisablehook = sys.unraisablehook


@contextlib.contextmanager
def _interrupts_never_swallowed() -> Iterator[None]:
    global _previous_unraisablehook
    if sys.unraisablehook is _redeliver_swallowed_interrupts:
        yield
        return
    _previous_unraisablehook, sys.unraisablehook = sys.unraisablehook, _redeliver_swallowed_interrupts
    try:
        yield
    finally:
        sys.unraisablehook = _previous_unraisablehook


def _in_known_swallower(frame) -> bool:
    """Is the handler running inside JAX's garbage-collector callback or a ``__del__`` (where an exception would be
    dropped)? There the signal is simply sent again later, without raising; anywhere else Python drops exceptions
    (weakref callbacks, other gc callbacks), :func:`_redeliver_swallowed_interrupts` catches it."""
    for _ in range(3):  # the handler runs in such a function, or in a helper it calls
        if frame is None:
            return False
        if frame.f_code.co_name == "__del__" or frame.f_code.co_name.endswith("gc_callback"):
            return True
        frame = frame.f_back
    return False


def _raise_interrupted(signum, frame) -> None:
    global _stop_signal
    if _in_known_swallower(frame):
        _deliver_later(signum)
        return
    _stop_signal = signum
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While the block runs in the main thread, SIGINT and SIGTERM raise :class:`Interrupted`.

    A signal the program was told to ignore (``nohup``, a shell's background job) stays ignored; elsewhere than in
    the main thread this does nothing (Python delivers signals to the main thread only).
    """
    global _stop_signal
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outermost = all(signal.getsignal(signum) is not _raise_interrupted for signum in _HANDLED)
    previous = {}
    for signum in _HANDLED:
        current = signal.getsignal(signum)
        if current in (signal.SIG_DFL, signal.default_int_handler, _raise_interrupted):
            previous[signum] = current
            signal.signal(signum, _raise_interrupted)
    try:
        with _interrupts_never_swallowed():
            yield
    finally:
        if outermost:
            _stop_signal = None  # the stop has been handled: a later error in this process is its own
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# ==================================================================================================== workers
def _interrupt_once(signum, frame) -> None:
    global _stop_signal
    if _in_known_swallower(frame):
        _deliver_later(signum)
        return
    _stop_signal = signum
    # Later SIGTERMs are ignored while the worker cleans up (marks its run resumable); the parent's SIGKILL after
    # its grace period is the hard stop.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Interrupted(signum)


def _redeliver_worker_interrupt(unraisable) -> None:
    if isinstance(unraisable.exc_value, Interrupted):
        signal.signal(unraisable.exc_value.signum, _interrupt_once)  # it set SIGTERM to ignored when it ran
        _deliver_later(unraisable.exc_value.signum)
    else:
        sys.__unraisablehook__(unraisable)


def worker_setup(graceful: bool = True, grace: float = 10.0, poll: float = 0.5) -> None:
    """Signals and parent watch of a worker process; call it first in the worker.

    Args:
        graceful: SIGTERM raises :class:`Interrupted` (once) so that the worker's ``except``/``finally`` blocks
            run; with False, SIGTERM keeps its default (the process ends at once).
        grace: seconds a worker whose parent died has to clean up before it exits regardless.
        poll: seconds between checks that the parent is alive.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if graceful:
        signal.signal(signal.SIGTERM, _interrupt_once)
        # A SIGTERM swallowed by a gc callback comes again, with the handler re-armed (see
        # _redeliver_swallowed_interrupts).
        sys.unraisablehook = _redeliver_worker_interrupt
    exit_with_parent(grace=grace if graceful else 0.0, poll=poll)


# Run by the parent watch before os._exit: what a clean-up that overran its grace must still do.
_FORCED_EXIT_HOOKS: list[Callable[[], None]] = []


def add_forced_exit_hook(hook: Callable[[], None]) -> None:
    """Run ``hook`` (in the watch thread) if this worker is ended by ``os._exit`` because its parent died and the
    graceful clean-up overran the grace, e.g. the main thread was inside a long compilation, where a signal waits.
    It must open its own resources (an SQLite connection belongs to its thread). Undo with
    :func:`remove_forced_exit_hook`."""
    _FORCED_EXIT_HOOKS.append(hook)


def remove_forced_exit_hook(hook: Callable[[], None]) -> None:
    with contextlib.suppress(ValueError):
        _FORCED_EXIT_HOOKS.remove(hook)


def exit_with_parent(grace: float = 10.0, poll: float = 0.5) -> None:
    """End this process when its parent dies: SIGTERM to itself (the graceful path), then, after ``grace``
    seconds, the forced-exit hooks (:func:`add_forced_exit_hook`) and ``os._exit``."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        if grace > 0:
            with contextlib.suppress(OSError):
                os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(grace)
        for hook in list(_FORCED_EXIT_HOOKS):
            with contextlib.suppress(Exception):
                hook()
        os._exit(1)

    threading.Thread(target=watch, name="fidec-parent-watch", daemon=True).start()


# ==================================================================================================== liveness
def process_start_token(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), to tell a process from a later one that
    reuses its pid; None where unknown (no /proc, or no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def pid_alive(pid: int, start_token: str | None = None) -> bool:
    """Is process ``pid`` (on this host) alive, and, when ``start_token`` is given, the same process as then?

    A zombie (killed, not yet reaped) is not alive.
    """
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    except OverflowError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True  # no /proc: os.kill said it exists
    if stat[0] in ("Z", "X"):
        return False
    return start_token is None or stat[19] == start_token


def identity() -> dict:
    """This process as a claim holder: pid, host and start token."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": process_start_token(os.getpid())}


# ==================================================================================================== pool
class _Worker:
    def __init__(self, process, connection):
        self.process = process
        self.connection = connection
        self.index: int | None = None  # the item it runs
        self.group: Any = None  # the affinity group of the last item it ran


def _worker_main(connection, fn: Callable, initializer: Callable | None, initargs: tuple) -> None:
    """A worker's loop: run ``fn(item)`` for every item it is sent; exit after an interrupt or on ``None``."""
    try:
        worker_setup(graceful=True)
        if initializer is not None:
            initializer(*initargs)
        while True:
            message = connection.recv()
            if message is None:
                return
            index, item = message
            try:
                value = fn(item)
            except BaseException as error:
                if interrupt_of(error) is not None:
                    connection.send(("interrupted", index, None))
                    return
                # Reported for this item; the worker takes the next one.
                text = f"{type(error).__name__}: {error}"
                connection.send(("error", index, (text, traceback.format_exc())))
                continue
            try:
                connection.send(("ok", index, value))
            except Exception as error:  # e.g. an unpicklable result
                connection.send(("error", index, (f"cannot return the result: {error}", traceback.format_exc())))
    except (KeyboardInterrupt, EOFError, OSError):
        return  # interrupted while idle, or the parent is gone: nothing to report, no traceback


class WorkerPool:
    """Run ``fn(item)`` for every item in ``workers`` spawned processes; see the module docstring.

    Args:
        fn: a picklable module-level function of one argument.
        workers: processes at most (never more than there are items).
        initializer, initargs: called once in each worker after its signal set-up.
        grace: seconds workers get to finish cleaning up after an interrupt before they are killed.
        context: the multiprocessing start method (``spawn``: JAX is not fork-safe).
        affinity: ``item -> group``; a worker takes the next item of the group it ran last (it has that group's
            programs compiled), else the next item of a group no other worker runs, else the next item.
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        workers: int,
        initializer: Callable | None = None,
        initargs: tuple = (),
        grace: float = 10.0,
        context: str = "spawn",
        affinity: Callable[[Any], Any] | None = None,
    ):
        self.fn, self.workers = fn, max(1, int(workers))
        self.affinity = affinity
        self.initializer, self.initargs = initializer, initargs
        self.grace = grace
        self.context = multiprocessing.get_context(context)
        self._live: list[_Worker] = []
        self.stop_requested = False

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._live if w.process.pid is not None]

    def _start_worker(self) -> _Worker:
        parent_end, child_end = self.context.Pipe()
        process = self.context.Process(  # type: ignore[attr-defined]  # the spawn context has Process
            target=_worker_main,
            args=(child_end, self.fn, self.initializer, self.initargs),
            name="fidec-worker",
            daemon=False,  # workers start their own processes (evaluation environments)
        )
        process.start()
        child_end.close()
        worker = _Worker(process, parent_end)
        self._live.append(worker)
        return worker

    def run(self, items: Iterable[Any]) -> Iterator[tuple[Any, str, Any]]:
        """Yield ``(item, kind, value)`` as items finish, ``kind`` being

        * ``"ok"``: ``value`` is what ``fn`` returned;
        * ``"error"``: ``fn`` raised; ``value`` is ``(message, traceback)``, and the worker takes the next item;
        * ``"died"``: the worker process ended without a result (killed, crashed); ``value`` names the exit status;
        * ``"interrupted"``: the worker alone received SIGTERM and has exited (its clean-up ran).

        An interrupt (:class:`Interrupted`, KeyboardInterrupt) in the caller stops every worker before it
        propagates; so does closing the generator early. :meth:`stop` starts no further item.
        """
        items = list(items)
        queue = collections.deque(range(len(items)))
        groups = None if self.affinity is None else [self.affinity(item) for item in items]  # once per run
        try:
            while queue or any(w.index is not None for w in self._live):
                while queue and not self.stop_requested:
                    idle = next((w for w in self._live if w.index is None), None)
                    if idle is None:
                        if len(self._live) >= min(self.workers, len(items)):
                            break
                        idle = self._start_worker()
                    idle.index = self._next_for(idle, queue, groups)
                    idle.connection.send((idle.index, items[idle.index]))
                if self.stop_requested:
                    queue.clear()
                busy = [w for w in self._live if w.index is not None]
                if not busy:
                    break
                waitables = [w.connection for w in busy] + [w.process.sentinel for w in busy]
                ready = multiprocessing.connection.wait(waitables)
                for worker in busy:
                    if worker.connection in ready:
                        try:
                            kind, index, value = worker.connection.recv()
                        except (EOFError, OSError):
                            kind = "died"
                        else:
                            if kind == "interrupted":
                                # The worker alone was interrupted (its parent was not): it has exited.
                                worker.process.join(5)
                                self._forget(worker)
                                yield items[index], "interrupted", ("the worker process was sent SIGTERM", "")
                                continue
                            worker.index = None
                            yield items[index], kind, value
                            continue
                    elif worker.process.sentinel not in ready:
                        continue
                    # The process ended without a result: killed (OOM killer, kill -9) or crashed.
                    worker.process.join(5)
                    index, code = worker.index, worker.process.exitcode
                    self._forget(worker)
                    how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit {code}"
                    assert index is not None  # a started worker always holds an item
                    yield items[index], "died", (f"worker process {worker.process.pid} died ({how})", "")
        except BaseException:
            self._terminate()
            raise
        else:
            self._close()

    def _next_for(self, worker: _Worker, queue: collections.deque, groups: list | None) -> int:
        """Take from ``queue`` the index ``worker`` should run next; ``groups[i]`` is item i's affinity group."""
        if groups is None:
            return queue.popleft()
        own = worker.group
        chosen = next((index for index in queue if own is not None and groups[index] == own), None)
        if chosen is None:
            others = {w.group for w in self._live if w is not worker and w.group is not None}
            chosen = next((index for index in queue if groups[index] not in others), queue[0])
        worker.group = groups[chosen]
        queue.remove(chosen)
        return chosen

    def stop(self) -> None:
        """Start no further item; items already running finish."""
        self.stop_requested = True

    def _forget(self, worker: _Worker) -> None:
        worker.connection.close()
        self._live.remove(worker)

    def _close(self) -> None:
        for worker in list(self._live):
            with contextlib.suppress(OSError):
                worker.connection.send(None)
        for worker in list(self._live):
            worker.process.join(self.grace)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            self._forget(worker)

    def _terminate(self) -> None:
        """SIGTERM every worker, wait ``grace`` seconds for them to clean up, then SIGKILL; a further interrupt
        during the wait kills at once."""
        alive = [w for w in self._live if w.process.is_alive()]
        for worker in alive:
            with contextlib.suppress(OSError):
                worker.process.terminate()
        try:
            deadline = time.monotonic() + self.grace
            while any(w.process.is_alive() for w in alive) and time.monotonic() < deadline:
                multiprocessing.connection.wait([w.process.sentinel for w in alive], timeout=0.2)
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: stop now
        finally:
            for worker in alive:
                if worker.process.is_alive():
                    worker.process.kill()
            for worker in list(self._live):
                worker.process.join(5)
                self._forget(worker)
