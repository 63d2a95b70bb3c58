"""Leaderboards: presets (agents × tasks × seeds × budget) run as a resumable grid of cells.

A *cell* is one (agent, task) pair; its seeds run inside it, one after another. Cells run in a local process pool
(``concurrent.futures`` with the ``spawn`` start method, so JAX never sees a forked process) or as Ray tasks on a
cluster. Every run is registered in the results store before anything trains, so the grid can be inspected with
:func:`leaderboard_status` at any time; re-running a preset after an interruption (even ``kill -9``) skips finished
cells and resumes unfinished runs from their last checkpoint (``train(..., resume=True)``), and a cell that fails is
recorded as failed while the rest of the grid goes on.

Presets (:mod:`fidec_gym.eval.grid.presets`) are YAML files in ``leaderboards/presets``; see that folder's README for
the schema.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from fidec_gym.errors import DiskFullError, as_disk_full
from fidec_gym.eval.grid.cells import (  # noqa: F401  (run_cell, register_cells, prepare_datasets: the API)
    INTERRUPTED_MESSAGE,
    _cell_error,
    _mark_failed,
    _train_config,
    prepare_datasets,
    program_group,
    register_cells,
    run_cell,
)
from fidec_gym.eval.grid.presets import (  # noqa: F401  (re-exported: the leaderboard's public API)
    AGENT_NAMES,
    PRESET_DIR,
    RUN_DEFAULTS,
    RUN_SETTINGS,
    Cell,
    LeaderboardError,
    Preset,
    available_presets,
    load_preset,
    train_config,
)
from fidec_gym.eval.grid.status import _pid_alive, leaderboard_status  # noqa: F401  (status: public API)
from fidec_gym.processes import WorkerPool, stop_on_signals


# ============================================================================ the grid
@dataclass
class GridResult:
    """What :func:`run_leaderboard` did."""

    out_dir: Path
    total: int
    skipped: list[str]
    done: list[str]
    failed: dict[str, str]
    skipped_failed: list[str] = field(default_factory=list)  # failed before and not retried
    held: dict[str, str] = field(default_factory=dict)  # cell -> the live process (another grid) training it

    @property
    def ok(self) -> bool:
        return not self.failed


def _cell_state(store, run_ids: list[int]) -> str:
    statuses = [store.get_run(i)["status"] for i in run_ids]
    if all(s == "done" for s in statuses):
        return "done"
    if any(s == "failed" for s in statuses):
        return "failed"
    return "unfinished"


def check_ray_address(address: str, timeout: float = 3.0) -> None:
    """Fail within ``timeout`` seconds when a ``host:port`` Ray address does not accept connections."""
    if address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise LeaderboardError(
            f"invalid Ray address {address!r}; use HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:10001 or 'auto'"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as error:
        raise LeaderboardError(
            f"cannot reach the Ray cluster at {address} ({error}); start it with `ray start --head` on that machine, "
            "check the address and firewall, or drop --ray-address to run on a local Ray instance "
            "(or use --backend local)"
        ) from None


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="cells", unit="cell", disable=not enabled, dynamic_ncols=True)


def run_leaderboard(
    preset: Preset | str,
    out_dir: str | Path,
    backend: str = "local",
    workers: Optional[int] = None,
    ray_address: Optional[str] = None,
    retry_failed: bool = False,
    progress: bool = True,
    seeds_together: bool = True,
) -> GridResult:
    """Run every unfinished cell of ``preset`` and record everything in ``out_dir/results.sqlite``.

    Args:
        preset: a :class:`Preset` or a preset name/path for :func:`load_preset`.
        out_dir: results directory (store, ``runs/`` with checkpoints and logs, ``data/`` with generated data).
        backend: ``"local"`` (process pool with ``spawn``) or ``"ray"``.
        workers: parallel cells (local: processes, default min(2, cpu count); Ray: CPUs of a local start).
        ray_address: an existing Ray cluster (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``); unreachable
            addresses fail within seconds.
        retry_failed: also re-run cells that failed before (they are skipped by default), with the preset's
            current settings when it was edited since.
        progress: show a progress bar of cells done/total.
        seeds_together: train a cell's seeds in one compiled program (vmapped; the default) or one after another
            (``False``, to time the two paths side by side). On the CPU too the one program is the faster path: it
            traces and compiles once per cell and worker, and costs less per seed (docs/benchmarks.md).
    """
    from fidec_gym.eval.store import ResultsStore

    if backend not in ("local", "ray"):
        raise LeaderboardError(f"unknown backend {backend!r}; valid: 'local', 'ray'")
    if workers is not None and workers < 1:
        raise LeaderboardError(f"--workers must be at least 1, got {workers}")
    if backend == "local" and ray_address:
        raise LeaderboardError("--ray-address needs --backend ray")
    if isinstance(preset, (str, Path)):
        preset = load_preset(preset)
    if backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise LeaderboardError('the Ray backend needs ray: pip install "fidec-gym[ray]"') from None
        if ray_address:
            check_ray_address(ray_address)

    out = Path(out_dir).expanduser().resolve()
    with stop_on_signals():  # SIGTERM stops the grid as Ctrl-C does
        store = ResultsStore(out)  # creates the directory; read-only or newer-schema directories fail here
        try:
            return _run_grid(store, preset, out, backend, workers, ray_address, retry_failed, progress, seeds_together)
        except Exception as error:
            full = as_disk_full(error, out)
            if full is None or full is error:
                raise
            raise full from error
        finally:
            store.close()


def _run_grid(
    store, preset, out, backend, workers, ray_address, retry_failed, progress, seeds_together=True
) -> GridResult:
    data_dir = out / "data"
    cells = preset.cells(data_dir)
    run_ids = register_cells(store, preset, cells, out, retry_failed=retry_failed)
    prepare_datasets(preset, data_dir, progress=progress)

    skipped, todo, held = [], [], {}
    for cell in cells:
        state = _cell_state(store, run_ids[cell.name])
        holder = store.live_claim(run_ids[cell.name]) if state != "done" else None
        if holder is not None:
            held[cell.name] = _held_message(holder)
        elif state == "done" or (state == "failed" and not retry_failed):
            skipped.append(cell.name)
        else:
            todo.append(cell)
    skipped_failed = [name for name in skipped if _cell_state(store, run_ids[name]) == "failed"]
    result = GridResult(
        out_dir=out, total=len(cells), skipped=skipped, done=[], failed={}, skipped_failed=skipped_failed, held=held
    )
    failed_before = len(skipped_failed)
    bar = _progress_bar(len(cells), len(skipped), progress)
    disk_full = None
    try:
        if todo:
            runner = _run_local if backend == "local" else _run_ray
            outcomes = runner(todo, out, run_ids, workers, ray_address, seeds_together)
            for outcome in outcomes:
                if outcome.get("disk_full"):
                    disk_full = outcome["disk_full"]
                    outcomes.close()  # stops the other workers (their runs stay resumable)
                    break
                if outcome.get("held"):
                    result.held[outcome["cell"]] = _held_message(outcome["held"])
                    continue
                if len(outcome.get("already_done", ())) == len(outcome["statuses"]):
                    result.skipped.append(outcome["cell"])  # another grid finished it first
                    bar.update(1)
                    continue
                failed = {s: m for s, m in outcome["statuses"].items() if m != "done"}
                if failed:
                    result.failed[outcome["cell"]] = "; ".join(
                        f"seed {seed}: {outcome['messages'].get(seed, '') or status}" for seed, status in failed.items()
                    )
                else:
                    result.done.append(outcome["cell"])
                bar.update(1)
                bar.set_postfix(failed=len(result.failed) + failed_before)
    except KeyboardInterrupt:
        _release_unfinished(store, todo, run_ids, INTERRUPTED_MESSAGE)
        raise
    finally:
        bar.close()
    if disk_full is not None:
        _release_unfinished(store, todo, run_ids, f"stopped: the disk is full; {INTERRUPTED_MESSAGE}")
        raise DiskFullError(
            f"no space left on the device holding {out} ({disk_full}); free space there and run the same command "
            "again: finished cells are kept and unfinished runs resume from their last checkpoint"
        )
    return result


def _held_message(holder: dict) -> str:
    from fidec_gym.eval.store import describe_claim

    return f"being trained by another process: {describe_claim(holder)}"


def _release_unfinished(store, cells: list[Cell], run_ids: dict, message: str) -> None:
    """After the workers stopped: runs they left ``running`` (killed before they could clean up) become ``pending``
    with ``message``; runs a live process (another grid) holds are left alone."""
    from fidec_gym.eval.store import claim_alive

    for cell in cells:
        for run_id in run_ids[cell.name]:
            try:
                run = store.get_run(run_id)
                if run["status"] != "running" or claim_alive(run) or _pid_alive(run["message"]):
                    continue
                store.set_status(run_id, "pending", message=message)
            except Exception:  # best effort on the way out (e.g. the store's disk is full)
                pass


def _run_cell_in_worker(cell: Cell, out: str, run_ids: list[int], together: bool = True) -> dict:
    """:func:`run_cell` in a grid worker, which keeps its evaluation environments open for its next cell."""
    from fidec_gym.eval.run.evaluate import keep_evaluators

    keep_evaluators()
    return run_cell(cell, out, run_ids, together)


def _run_cell_item(item: tuple) -> dict:
    return _run_cell_in_worker(*item)


def _run_local(cells: list[Cell], out: Path, run_ids: dict, workers: Optional[int], _address, together: bool = True):
    from fidec_gym.backend import default_workers, prepare_worker_environment

    workers = min(workers or default_workers(), len(cells))
    prepare_worker_environment(workers)  # inherited by the spawned workers: share one GPU
    # spawn: JAX is not fork-safe. Affinity: a worker keeps the compiled programs of its last cell, so it takes the
    # next cell that can reuse them (the toy landscapes of one agent) before one it would trace and compile anew.
    pool = WorkerPool(_run_cell_item, workers, affinity=lambda item: program_group(item[0]))
    results = pool.run([(cell, str(out), run_ids[cell.name], together) for cell in cells])
    try:
        for (cell, *_), kind, value in results:
            if kind == "ok":
                yield value
            elif kind == "interrupted":  # the worker alone got SIGTERM: its run is pending, the grid goes on
                yield {
                    "cell": cell.name,
                    "statuses": {seed: "pending" for seed in cell.seeds},
                    "messages": {seed: f"{value[0]}; {INTERRUPTED_MESSAGE}" for seed in cell.seeds},
                }
            else:  # e.g. a worker killed by the OOM killer: record, keep going
                outcome = _cell_error(cell, value[0])
                _mark_failed(out, run_ids[cell.name], outcome["messages"][cell.seeds[0]])
                yield outcome
    finally:
        results.close()  # type: ignore[attr-defined]  # a generator; an interrupt or an early stop ends every worker (SIGTERM, grace, SIGKILL)


def _run_ray(
    cells: list[Cell], out: Path, run_ids: dict, workers: Optional[int], address: Optional[str], together: bool = True
):
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            options["address"] = address
        else:
            options["num_cpus"] = workers or max(1, min(2, os.cpu_count() or 1))
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise LeaderboardError(
                f"cannot start or join Ray ({error}); check --ray-address (start a cluster with `ray start --head`) "
                "or use --backend local. A cluster with token authentication (the default of `ray start` since Ray "
                "2.59) needs RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN, or ~/.ray/auth_token from "
                "`ray get-auth-token`) in this shell too"
            ) from None
    pending: dict = {}
    try:
        # max_retries: a task whose worker process died (killed, node lost) runs once more; its runs' claim is
        # then held by a dead process and taken over, and training resumes from the last checkpoint.
        remote = ray.remote(num_cpus=1, max_retries=1)(_run_cell_in_worker)
        pending = {remote.remote(cell, str(out), run_ids[cell.name], together): cell for cell in cells}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ready[0])
            try:
                yield ray.get(ready[0])
            except Exception as error:  # a task whose worker died twice: record, keep going
                outcome = _cell_error(cell, error)
                _mark_failed(out, run_ids[cell.name], outcome["messages"][cell.seeds[0]])
                yield outcome
    except BaseException:  # Ctrl-C, SIGTERM, a full disk: stop the tasks (KeyboardInterrupt in each, then force)
        _cancel_ray_tasks(ray, list(pending))
        raise
    finally:
        if started_here:
            ray.shutdown()


def _cancel_ray_tasks(ray, refs: list, grace: float = 10.0) -> None:
    if not refs:
        return
    for ref in refs:
        ray.cancel(ref, force=False)  # KeyboardInterrupt in the task: train() marks its run pending
    try:
        ray.wait(refs, num_returns=len(refs), timeout=grace)
    except KeyboardInterrupt:
        pass  # a second Ctrl-C: stop now
    for ref in refs:
        try:
            ray.cancel(ref, force=True)
        except Exception:  # finished meanwhile
            pass
