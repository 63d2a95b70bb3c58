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

import concurrent.futures
import copy
import multiprocessing
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fidec_gym.errors import ResultsNotFoundError
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
    from fidec_gym.eval.run.config import TrainConfig

    return TrainConfig(
        agent=cell.agent,
        env_id=cell.env_id,
        seed=seed,
        agent_overrides=copy.deepcopy(cell.agent_overrides),
        dataset_path=cell.dataset_path,
        results_dir=str(out_dir),
        **cell.settings,
    )


def register_cells(store, preset: Preset, cells: list[Cell], out_dir: Path) -> dict[str, list[int]]:
    """Create (or find) every run of every cell in the store, status ``pending``; returns cell -> run ids."""
    from fidec_gym.eval.run.config import code_version

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


def run_cell(cell: Cell, out_dir: str, run_ids: list[int]) -> dict:
    """Train every unfinished seed of one cell (resuming from checkpoints); never raises for a failed seed.

    Runs in a worker process (local pool or Ray). Returns {"cell", "statuses": {seed: status}, "messages"}.
    """
    from fidec_gym.envs.registration import register_all
    from fidec_gym.eval.run.trainer import train
    from fidec_gym.eval.store import ResultsStore

    register_all()  # a fresh worker process knows no fidec/* IDs yet

    out = Path(out_dir)
    store = ResultsStore(out)
    statuses, messages = {}, {}
    for seed, run_id in zip(cell.seeds, run_ids):
        run = store.get_run(run_id)
        if run["status"] == "done":
            statuses[seed] = "done"
            continue
        try:
            result = train(_train_config(cell, seed, out), store=store, run_id=run_id, resume=True, progress=False)
            status = result.status
            message = "" if status == "done" else store.get_run(run_id).get("message", "")
        except Exception as error:  # train() recorded the failure in the store; the grid goes on
            status, message = "failed", f"{type(error).__name__}: {error}"
        statuses[seed], messages[seed] = status, message
    store.close()
    return {"cell": cell.name, "statuses": statuses, "messages": messages}


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
) -> GridResult:
    """Run every unfinished cell of ``preset`` and record everything in ``out_dir/results.sqlite``.

    Args:
        preset: a :class:`Preset` or a preset name/path for :func:`load_preset`.
        out_dir: results directory (store, ``runs/`` with checkpoints and logs, ``data/`` with generated data).
        backend: ``"local"`` (process pool with ``spawn``) or ``"ray"``.
        workers: parallel cells (local: processes, default min(2, cpu count); Ray: CPUs of a local start).
        ray_address: an existing Ray cluster (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``); unreachable
            addresses fail within seconds.
        retry_failed: also re-run cells that failed before (they are skipped by default).
        progress: show a progress bar of cells done/total.
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
    store = ResultsStore(out)  # creates the directory; read-only or newer-schema directories fail here
    data_dir = out / "data"
    cells = preset.cells(data_dir)
    run_ids = register_cells(store, preset, cells, out)
    prepare_datasets(preset, data_dir, progress=progress)

    skipped, todo = [], []
    for cell in cells:
        state = _cell_state(store, run_ids[cell.name])
        if state == "done" or (state == "failed" and not retry_failed):
            skipped.append(cell.name)
        else:
            todo.append(cell)
    skipped_failed = [name for name in skipped if _cell_state(store, run_ids[name]) == "failed"]
    result = GridResult(
        out_dir=out, total=len(cells), skipped=skipped, done=[], failed={}, skipped_failed=skipped_failed
    )
    failed_before = len(skipped_failed)
    bar = _progress_bar(len(cells), len(skipped), progress)
    try:
        if todo:
            runner = _run_local if backend == "local" else _run_ray
            for outcome in runner(todo, out, run_ids, workers, ray_address):
                failed = {s: m for s, m in outcome["statuses"].items() if m != "done"}
                if failed:
                    result.failed[outcome["cell"]] = "; ".join(
                        f"seed {seed}: {outcome['messages'].get(seed, '') or status}" for seed, status in failed.items()
                    )
                else:
                    result.done.append(outcome["cell"])
                bar.update(1)
                bar.set_postfix(failed=len(result.failed) + failed_before)
    finally:
        bar.close()
        store.close()
    return result


def _cell_error(cell: Cell, error: BaseException) -> dict:
    message = f"worker crashed: {type(error).__name__}: {error}"
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


def _run_local(cells: list[Cell], out: Path, run_ids: dict, workers: Optional[int], _address):
    from fidec_gym.backend import default_workers, prepare_worker_environment

    workers = min(workers or default_workers(), len(cells))
    prepare_worker_environment(workers)  # inherited by the spawned workers: share one GPU
    context = multiprocessing.get_context("spawn")  # JAX is not fork-safe
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(run_cell, cell, str(out), run_ids[cell.name]): cell for cell in cells}
        for future in concurrent.futures.as_completed(futures):
            cell = futures[future]
            try:
                yield future.result()
            except Exception as error:  # e.g. a worker killed by the OOM killer: record, keep going
                outcome = _cell_error(cell, error)
                _mark_failed(out, run_ids[cell.name], outcome["messages"][cell.seeds[0]])
                yield outcome


def _run_ray(cells: list[Cell], out: Path, run_ids: dict, workers: Optional[int], address: Optional[str]):
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        options = {"include_dashboard": False, "log_to_driver": False}
        if address:
            options["address"] = address
        else:
            options["num_cpus"] = workers or max(1, min(2, os.cpu_count() or 1))
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise LeaderboardError(
                f"cannot start or join Ray ({error}); check --ray-address (start a cluster with `ray start --head`) "
                "or use --backend local"
            ) from None
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(run_cell)
        pending = {remote.remote(cell, str(out), run_ids[cell.name]): cell for cell in cells}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ready[0])
            try:
                yield ray.get(ready[0])
            except Exception as error:  # a task whose worker died: record, keep going
                outcome = _cell_error(cell, error)
                _mark_failed(out, run_ids[cell.name], outcome["messages"][cell.seeds[0]])
                yield outcome
    finally:
        if started_here:
            ray.shutdown()


# ============================================================================ status
def _pid_alive(message: str) -> Optional[bool]:
    """For a ``running`` run marked "pid N [on HOST]": is that process alive (None when unknown or elsewhere)?"""
    parts = message.split()
    if len(parts) < 2 or parts[0] != "pid" or not parts[1].isdigit():
        return None
    if len(parts) == 4 and parts[2] == "on" and parts[3] != socket.gethostname():
        return None
    pid = int(parts[1])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed worker whose parent died too may linger as a zombie until it is reaped: that is not alive.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def leaderboard_status(out_dir: str | Path, preset: Optional[str] = None) -> tuple[list[dict], dict]:
    """Per-cell counts of done / running / failed / pending runs, and the totals.

    A ``running`` run whose process no longer exists (on this host) is reported as ``interrupted``; re-running the
    preset resumes it.
    """
    from fidec_gym.eval.store import DB_FILENAME, ResultsStore

    out = Path(out_dir).expanduser()
    if not (out / DB_FILENAME).is_file():
        raise ResultsNotFoundError(
            f"no results in {out} (no {DB_FILENAME}); start a grid with "
            f"`fidec leaderboard run --preset NAME --out {out}`"
        )
    store = ResultsStore(out)
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
        if status == "running" and _pid_alive(run["message"]) is False:
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
