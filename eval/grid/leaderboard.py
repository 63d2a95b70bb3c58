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

import json
import os
import shutil
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from fidec_gym.errors import DiskFullError, as_disk_full
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
from fidec_gym.processes import WorkerPool, pid_alive, stop_on_signals

INTERRUPTED_MESSAGE = (
    "interrupted; run the same `fidec leaderboard run` command again to resume from the last checkpoint"
)


# ============================================================================ datasets
def prepare_datasets(preset: Preset, data_dir: Path, progress: bool = True) -> list[Path]:
    """Generate the preset's ``datasets: {NAME: {generate: ...}}`` entries into ``data_dir`` when missing."""
    made = []
    for dataset, entry in preset.datasets.items():
        if "generate" not in entry:
            continue
        if (data_dir / f"{dataset}.npz").is_file():
            continue
        from fidec_gym.envs.generate import generate_manipulation_dataset

        options = entry["generate"] or {}
        name = dataset.removesuffix("-v0")
        if name.startswith("visual-"):
            raise LeaderboardError(f"datasets.{dataset}: generation of visual datasets is not supported by presets")
        train_path, _ = generate_manipulation_dataset(
            name,
            int(options.get("episodes", 50)),
            str(data_dir),
            workers=int(options.get("workers", 1)),
            seed=int(options.get("seed", 0)),
            progress=progress,
        )
        made.append(Path(train_path))
    return made


# ============================================================================ running one cell
def _train_config(cell: Cell, seed: int, out_dir: Path):
    return train_config(cell, seed, out_dir)


_UNSET = object()


def _differences(old, new, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf that differs between two configs (nested keys joined with dots)."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            found += _differences(old.get(key, _UNSET), new.get(key, _UNSET), f"{prefix}{key}.")
        return found
    if old == new:
        return []
    shown = ["(unset)" if value is _UNSET else repr(value) for value in (old, new)]
    return [f"{prefix[:-1]}: {shown[0]} -> {shown[1]}"]


def _check_changed_cells(store, preset: Preset, cells: list[Cell], out: Path, retry_failed: bool) -> list[tuple]:
    """Runs already in the store whose stored config differs from the preset's: the ones that may be restarted with
    the new config, as (run, new config, cell); a changed cell that may not is an error naming it and the keys."""
    from fidec_gym.eval.store import claim_alive, describe_claim, to_json

    replace, problems = [], []
    for cell in cells:
        changed = []
        for seed in cell.seeds:
            run = store.find_run(agent=cell.agent, env_id=cell.env_id, seed=seed, cell=cell.name)
            config = json.loads(to_json(_train_config(cell, seed, out).record()))
            if run is not None and run["config"] != config:
                changed.append((run, config))
        if not changed:
            continue
        keys = _differences(changed[0][0]["config"], changed[0][1])
        what = f"cell {cell.name} ({'; '.join(keys[:6])}{'; ...' if len(keys) > 6 else ''})"
        statuses = {run["status"] for run, _ in changed}
        holder = next((run for run, _ in changed if claim_alive(run)), None)
        started = any(run["last_good_step"] or store.evaluations(run["id"]) for run, _ in changed)
        if "done" in statuses:
            problems.append(
                f"{what} finished with other settings, so new results would mix with the old ones: write the "
                f"changed preset to a new directory (--out), or give it a new name (`name:` in the YAML)"
            )
        elif holder is not None:
            problems.append(f"{what} is being trained with other settings by {describe_claim(holder)}")
        elif ("failed" in statuses or started) and not retry_failed:
            state = "failed" if "failed" in statuses else "was interrupted"
            problems.append(
                f"{what} {state} with other settings: add --retry-failed to run it again with the new settings "
                "(its old results are discarded), or restore the preset's old settings"
            )
        else:
            replace += [(run, config, cell) for run, config in changed]
    if problems:
        raise LeaderboardError(
            f"preset {preset.name}: {len(problems)} cell(s) in {out} already exist with other settings:\n  "
            + "\n  ".join(problems)
        )
    return replace


def _restart_with(store, out: Path, replace: list[tuple]) -> None:
    """Give failed (or unstarted) runs their new config: old rows and the run directory go."""
    from fidec_gym.envs.catalogue import task_info
    from fidec_gym.eval.run.config import run_directory

    for run, config, cell in replace:
        store.replace_run_config(run["id"], config)
        run_dir = run_directory(out, cell.agent, task_info(cell.env_id).name, run["seed"], cell.name)
        if run_dir.exists():
            doomed = run_dir.with_name(f".old-{run_dir.name}-{os.getpid()}")
            os.replace(run_dir, doomed)
            shutil.rmtree(doomed, ignore_errors=True)


def register_cells(
    store, preset: Preset, cells: list[Cell], out_dir: Path, retry_failed: bool = False
) -> dict[str, list[int]]:
    """Create (or find) every run of every cell in the store, status ``pending``; returns cell -> run ids.

    A run already stored with another config (the preset was edited) is restarted with the new one when it failed
    and ``retry_failed`` is set, or when it never started; otherwise nothing changes and a
    :class:`LeaderboardError` names the cells, the differing keys and the fix.
    """
    from fidec_gym.eval.run.config import code_version

    _restart_with(store, out_dir, _check_changed_cells(store, preset, cells, out_dir, retry_failed))
    version = code_version()
    run_ids = {}
    for cell in cells:
        ids = []
        for seed in cell.seeds:
            config = _train_config(cell, seed, out_dir)
            ids.append(
                store.create_run(
                    agent=cell.agent,
                    env_id=cell.env_id,
                    seed=seed,
                    config=config.record(),
                    data_provenance={},
                    code_version=version,
                    cell=cell.name,
                    preset=preset.name,
                )
            )
        run_ids[cell.name] = ids
    return run_ids


class _CellClaim:
    """Hold a cell's runs for this process while it trains them (so a second grid on the same directory skips the
    cell), with a heartbeat thread for holders on other hosts. ``holder`` is set when a live process holds it."""

    def __init__(self, store, run_ids: list[int], beat_seconds: float = 15.0):
        self.store, self.run_ids, self.beat_seconds = store, list(run_ids), beat_seconds
        self.holder: Optional[dict] = None
        self._stop = threading.Event()

    def __enter__(self) -> _CellClaim:
        self.holder = self.store.claim_runs(self.run_ids)
        if self.holder is None:
            threading.Thread(target=self._beat, name="fidec-claim-heartbeat", daemon=True).start()
        return self

    def _beat(self) -> None:
        from fidec_gym.eval.store import ResultsStore

        store = ResultsStore(self.store.root)  # SQLite connections stay in their thread
        while not self._stop.wait(self.beat_seconds):
            try:
                store.heartbeat(self.run_ids)
            except Exception:  # e.g. a full disk: the training thread reports it
                pass
        store.close()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.holder is None:
            try:
                self.store.release_runs(self.run_ids)
            except Exception:  # a dead holder's claim is taken over anyway
                pass


def run_cell(cell: Cell, out_dir: str, run_ids: list[int], together: bool = True) -> dict:
    """Train every unfinished seed of one cell (resuming from checkpoints); never raises for a failed seed.

    With ``together`` (the default) all unfinished seeds train in one compiled program
    (:func:`fidec_gym.eval.run.multiseed.train_seeds`); offline-to-online cells, and ``together=False``, train one seed
    after another.

    Runs in a worker process (local pool or Ray). Returns {"cell", "statuses": {seed: status}, "messages"}, plus
    "held" (the claim of a live process that is training this cell; nothing was done), "already_done" (seeds found
    finished) or "disk_full" (a message; the run was marked resumable and the grid should stop).
    """
    from fidec_gym.envs.registration import register_all
    from fidec_gym.eval.run.trainer import train
    from fidec_gym.eval.store import ResultsStore

    register_all()  # a fresh worker process knows no fidec/* IDs yet

    out = Path(out_dir)
    store = ResultsStore(out)
    statuses: dict[int, str] = {}
    messages: dict[int, str] = {}
    outcome: dict = {"cell": cell.name, "statuses": statuses, "messages": messages}
    # -- claim: a second grid on the same directory must not train this cell at the same time
    with _CellClaim(store, run_ids) as claim:
        if claim.holder is not None:
            store.close()
            return {**outcome, "held": claim.holder}
        # -- the seeds
        todo = []
        for seed, run_id in zip(cell.seeds, run_ids):
            if store.get_run(run_id)["status"] == "done":
                statuses[seed] = "done"
                outcome.setdefault("already_done", []).append(seed)  # e.g. finished by another grid meanwhile
            else:
                todo.append((seed, run_id))
        if todo and together and not cell.settings.get("online_steps"):
            _train_together(cell, out, store, todo, outcome)
        for seed, run_id in todo if not (together and not cell.settings.get("online_steps")) else []:
            try:
                result = train(_train_config(cell, seed, out), store=store, run_id=run_id, resume=True, progress=False)
                status = result.status
                message = "" if status == "done" else store.get_run(run_id).get("message", "")
            except Exception as error:  # train() recorded the failure in the store; the grid goes on
                status, message = "failed", f"{type(error).__name__}: {error}"
                # -- a full disk is no failure of the cell: keep the run resumable and stop the grid
                full = as_disk_full(error, out)
                if full is not None:
                    _mark_pending(store, run_id, f"stopped: {full}")
                    statuses[seed], messages[seed] = "pending", str(full)
                    written = getattr(error, "filename", None)
                    outcome["disk_full"] = f"cell {cell.name}, seed {seed}{f', writing {written}' if written else ''}"
                    break
            statuses[seed], messages[seed] = status, message
    store.close()
    return outcome


def _train_together(cell: Cell, out: Path, store, todo: list[tuple[int, int]], outcome: dict) -> None:
    """The cell's unfinished seeds in one compiled program; fills ``outcome`` as the one-seed loop does."""
    from fidec_gym.eval.run.multiseed import train_seeds

    seeds, ids = [seed for seed, _ in todo], [run_id for _, run_id in todo]
    statuses, messages = outcome["statuses"], outcome["messages"]
    try:
        results = train_seeds(
            _train_config(cell, seeds[0], out),
            seeds,
            store=store,
            run_ids=ids,
            resume=True,
            progress=False,
            cell=cell.name,
        )
    except Exception as error:  # train_seeds recorded the failure of every seed in the store; the grid goes on
        full = as_disk_full(error, out)
        for seed, run_id in todo:
            if full is not None:
                _mark_pending(store, run_id, f"stopped: {full}")
                statuses[seed], messages[seed] = "pending", str(full)
            else:
                statuses[seed], messages[seed] = "failed", f"{type(error).__name__}: {error}"
        if full is not None:
            outcome["disk_full"] = f"cell {cell.name}, seeds {seeds}"
        return
    for (seed, run_id), result in zip(todo, results):
        statuses[seed] = result.status
        messages[seed] = "" if result.status == "done" else store.get_run(run_id).get("message", "")


def _mark_pending(store, run_id: int, message: str) -> None:
    try:
        store.set_status(run_id, "pending", message=message[:4000])
    except Exception:  # the store may be what is full; a run left "running" by a dead process resumes too
        pass


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
    seeds_together: Optional[bool] = None,
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
        seeds_together: train a cell's seeds in one compiled program (vmapped) or one after another; default: in
            one program on an accelerator, one after another on a CPU, where vmapped seeds measured no cheaper per
            seed (docs/benchmarks.md).
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

    if seeds_together is None:
        from fidec_gym.backend import installed_accelerator_plugin

        seeds_together = installed_accelerator_plugin() is not None
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


def _cell_error(cell: Cell, error: BaseException | str) -> dict:
    message = (
        f"worker crashed: {error}" if isinstance(error, str) else f"worker crashed: {type(error).__name__}: {error}"
    )
    return {
        "cell": cell.name,
        "statuses": {seed: "failed" for seed in cell.seeds},
        "messages": {seed: message for seed in cell.seeds},
    }


def _mark_failed(out: Path, run_ids: list[int], message: str) -> None:
    from fidec_gym.eval.store import ResultsStore

    store = ResultsStore(out)
    for run_id in run_ids:
        if store.get_run(run_id)["status"] != "done":
            store.set_status(run_id, "failed", message=message)
    store.close()


def _run_cell_item(item: tuple) -> dict:
    return run_cell(*item)


def _run_local(cells: list[Cell], out: Path, run_ids: dict, workers: Optional[int], _address, together: bool = True):
    from fidec_gym.backend import default_workers, prepare_worker_environment

    workers = min(workers or default_workers(), len(cells))
    prepare_worker_environment(workers)  # inherited by the spawned workers: share one GPU
    pool = WorkerPool(_run_cell_item, workers)  # spawn: JAX is not fork-safe
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
        remote = ray.remote(num_cpus=1, max_retries=1)(run_cell)
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


# ============================================================================ status
def _pid_alive(message: str) -> Optional[bool]:
    """For a ``running`` run marked "pid N [on HOST]": is that process alive (None when unknown or elsewhere)?

    A killed worker whose parent died too may linger as a zombie until it is reaped: that is not alive.
    """
    parts = message.split()
    if len(parts) < 2 or parts[0] != "pid" or not parts[1].isdigit():
        return None
    if len(parts) == 4 and parts[2] == "on" and parts[3] != socket.gethostname():
        return None
    return pid_alive(int(parts[1]))


def leaderboard_status(out_dir: str | Path, preset: Optional[str] = None) -> tuple[list[dict], dict]:
    """Per-cell counts of done / running / failed / pending runs, and the totals.

    A ``running`` run whose process no longer exists (on this host) is reported as ``interrupted``; re-running the
    preset resumes it. Only reads: works on a read-only results directory.
    """
    from fidec_gym.errors import ResultsNotFoundError
    from fidec_gym.eval.store import DB_FILENAME, ResultsStore, claim_alive

    out = Path(out_dir).expanduser()
    if not (out / DB_FILENAME).is_file():
        raise ResultsNotFoundError(
            f"no results in {out} (no {DB_FILENAME}); start a grid with "
            f"`fidec leaderboard run --preset NAME --out {out}`"
        )
    store = ResultsStore.open_for_reading(out)
    filters = {} if preset is None else {"preset": preset}
    cells: dict[str, dict] = {}
    for run in store.runs(**filters):
        name = run["cell"] or f"{run['agent']}/{run['env_id']}"
        entry = cells.setdefault(
            name,
            {
                "cell": name,
                "agent": run["agent"],
                "env_id": run["env_id"],
                "done": 0,
                "running": 0,
                "interrupted": 0,
                "failed": 0,
                "pending": 0,
                "messages": [],
            },
        )
        status = run["status"]
        if status == "running":
            claimed = bool(run.get("claim_pid"))
            if (claimed and not claim_alive(run)) or (not claimed and _pid_alive(run["message"]) is False):
                status = "interrupted"
        entry[status] += 1
        if status == "failed" and run["message"]:
            entry["messages"].append(f"seed {run['seed']}: {run['message'].splitlines()[0]}")
    rows = list(cells.values())
    for row in rows:
        if row["failed"]:
            row["state"] = "failed"
        elif row["running"]:
            row["state"] = "running"
        elif row["interrupted"]:
            row["state"] = "interrupted"
        elif row["pending"]:
            row["state"] = "pending" if not row["done"] else "partial"
        else:
            row["state"] = "done"
    totals = {key: sum(row[key] for row in rows) for key in ("done", "running", "interrupted", "failed", "pending")}
    totals["cells"] = len(rows)
    totals["cells_done"] = sum(row["state"] == "done" for row in rows)
    store.close()
    return rows, totals
