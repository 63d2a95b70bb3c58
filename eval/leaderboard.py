"""Leaderboards: presets (agents × tasks × seeds × budget) run as a resumable grid of cells.

A *cell* is one (agent, task) pair; its seeds run inside it, one after another. Cells run in a local process pool
(``concurrent.futures`` with the ``spawn`` start method, so JAX never sees a forked process) or as Ray tasks on a
cluster. Every run is registered in the results store before anything trains, so the grid can be inspected with
:func:`leaderboard_status` at any time; re-running a preset after an interruption (even ``kill -9``) skips finished
cells and resumes unfinished runs from their last checkpoint (``eval.train.train(..., resume=True)``), and a cell
that fails is recorded as failed while the rest of the grid goes on.

Presets are YAML files in ``leaderboards/presets``; see that folder's README for the schema.
"""

from __future__ import annotations

import concurrent.futures
import copy
import difflib
import multiprocessing
import os
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

PRESET_DIR = Path(__file__).resolve().parent.parent / "leaderboards" / "presets"
AGENT_NAMES = ("bc", "iql", "rebrac", "fql", "deflow", "fidec")

# Run settings a preset may set (top level or per suite); they map one to one onto eval.train.TrainConfig fields.
RUN_SETTINGS = {
    "offline_steps": int, "online_steps": int, "eval_interval": int, "eval_episodes": int, "eval_workers": int,
    "log_interval": int, "checkpoint_interval": int, "use_task_hyperparameters": bool, "divergence_table": str,
    "video_episodes": int, "video_frame_skip": int, "updates_per_dispatch": int,
}
RUN_DEFAULTS = {
    "offline_steps": 1_000_000, "online_steps": 0, "eval_interval": 100_000, "eval_episodes": 50,
    "eval_workers": None, "log_interval": 5_000, "checkpoint_interval": 100_000, "use_task_hyperparameters": True,
    "divergence_table": "paper", "video_episodes": 0, "video_frame_skip": 1, "updates_per_dispatch": 1,
}
PRESET_KEYS = {"name", "description", "agents", "tasks", "seeds", "agent_overrides", "suite_settings", "datasets",
               "exclude", *RUN_SETTINGS}
DATASET_KEYS = {"path", "generate"}
GENERATE_KEYS = {"episodes", "seed", "workers"}
EXCLUDE_KEYS = {"agent", "task", "suite", "category"}
SUITES = ("ogbench", "visual", "d4rl", "toy")


class LeaderboardError(ValueError):
    """Bad preset, results directory or backend; the message names the problem and the fix."""


# ============================================================================ small utilities
def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _close(name: str, choices) -> str:
    matches = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(m) for m in matches)}?)" if matches else ""


# ============================================================================ presets
@dataclass(frozen=True)
class Cell:
    """One (agent, task) pair of a preset, with its seeds and the train settings of each seed."""

    name: str
    agent: str
    env_id: str
    seeds: tuple[int, ...]
    settings: dict = field(hash=False, compare=False)  # RUN_SETTINGS values
    agent_overrides: dict = field(hash=False, compare=False)
    dataset_path: Optional[str] = None


@dataclass
class Preset:
    """A validated leaderboard preset."""

    name: str
    description: str
    agents: list[str]
    tasks: list[str]
    seeds: list[int]
    settings: dict
    agent_overrides: dict
    suite_settings: dict
    datasets: dict
    exclude: list[dict]
    source: Optional[Path] = None

    def cells(self, data_dir: Optional[Path] = None) -> list[Cell]:
        """Every (agent, task) cell in a stable order: agents outer, so that a worker process tends to take
        consecutive cells of one agent and reuses its compiled update and sampling functions."""
        from envs.catalogue import task_info

        cells = []
        for agent in self.agents:
            for env_id in self.tasks:
                spec = task_info(env_id)
                suite_settings = dict(self.suite_settings.get(spec.suite, {}))
                seeds = suite_settings.pop("seeds", self.seeds)
                suite_overrides = suite_settings.pop("agent_overrides", {})
                settings = {**self.settings, **suite_settings}
                dataset_path = self.dataset_path(spec.dataset, data_dir)
                if self._excluded(agent, spec):
                    continue
                overrides = {**self.overrides_for(agent), **_merged_overrides(suite_overrides, agent)}
                cells.append(Cell(
                    name=f"{self.name}:{agent}:{spec.name}", agent=agent, env_id=spec.env_id, seeds=tuple(seeds),
                    settings=settings, agent_overrides=overrides, dataset_path=dataset_path,
                ))
        return cells

    def overrides_for(self, agent: str) -> dict:
        """Agent config overrides: the ``all`` entry (keys the agent knows) then the agent's own entry."""
        return _merged_overrides(self.agent_overrides, agent)

    def dataset_path(self, dataset: str, data_dir: Optional[Path]) -> Optional[str]:
        entry = self.datasets.get(dataset)
        if entry is None:
            return None
        if "path" in entry:
            return str(Path(entry["path"]).expanduser())
        return None if data_dir is None else str(data_dir)

    def _excluded(self, agent: str, spec) -> bool:
        for rule in self.exclude:
            if all(
                (key == "agent" and value == agent) or (key == "task" and spec.env_id == _task_id(value))
                or (key == "suite" and value == spec.suite) or (key == "category" and value in (spec.category,
                                                                                                 spec.table_category))
                for key, value in rule.items()
            ):
                return True
        return False


def _merged_overrides(overrides: dict, agent: str) -> dict:
    """``overrides["all"]`` restricted to the keys ``agent`` knows, then ``overrides[agent]``."""
    merged = {}
    known = _agent_config_keys(agent)
    for key, value in (overrides.get("all") or {}).items():
        if known is None or key in known:
            merged[key] = copy.deepcopy(value)
    merged.update(copy.deepcopy(overrides.get(agent) or {}))
    return merged


def _task_id(name: str) -> str:
    return name if name.startswith("fidec/") else f"fidec/{name}"


def _agent_config_keys(agent: str) -> Optional[set]:
    """Config keys of ``agent`` (None when the agents package cannot be imported, e.g. a partial checkout)."""
    try:
        from agents import get_config
    except ImportError:
        return None
    try:
        return set(get_config(agent))
    except (KeyError, ValueError, ImportError):
        return None


def available_presets() -> list[str]:
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))


def _expand_tasks(entries: list, where: str) -> list[str]:
    """Task IDs from IDs, ``category:<name>`` or ``suite:<name>`` selectors (numbered tasks, no default aliases)."""
    from envs.catalogue import all_tasks, list_tasks, task_info

    tasks: list[str] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise LeaderboardError(f"{where}: task entries must be strings, got {entry!r}")
        if entry.startswith(("category:", "suite:")):
            kind, value = entry.split(":", 1)
            try:
                ids = list_tasks(**{kind: value.strip()})
            except ValueError as error:
                raise LeaderboardError(f"{where}: {error}") from None
            # A category means its numbered tasks; the un-suffixed alias would duplicate the default task.
            ids = [i for i in ids if not all_tasks()[i].extra.get("alias")]
        else:
            try:
                ids = [task_info(entry).env_id]
            except KeyError as error:
                raise LeaderboardError(f"{where}: {error}") from None
        tasks.extend(i for i in ids if i not in tasks)
    if not tasks:
        raise LeaderboardError(f"{where}: no tasks selected; list IDs with `fidec tasks`")
    return tasks


def _check_keys(mapping: dict, valid: set, where: str) -> None:
    if not isinstance(mapping, dict):
        raise LeaderboardError(f"{where} must be a mapping, got {type(mapping).__name__}")
    for key in mapping:
        if key not in valid:
            raise LeaderboardError(f"{where}: unknown key {key!r}{_close(str(key), valid)}; valid keys: {sorted(valid)}")


def _check_setting(key: str, value, where: str) -> Any:
    kind = RUN_SETTINGS[key]
    if value is None and key == "eval_workers":
        return None
    if kind is bool:
        if not isinstance(value, bool):
            raise LeaderboardError(f"{where}: {key} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 0:
            raise LeaderboardError(f"{where}: {key} must be a non-negative integer, got {value!r}")
        if key in ("eval_interval", "log_interval", "checkpoint_interval", "updates_per_dispatch",
                   "video_frame_skip") and value < 1:
            raise LeaderboardError(f"{where}: {key} must be at least 1, got {value!r}")
        return int(value)
    if not isinstance(value, str):
        raise LeaderboardError(f"{where}: {key} must be a string, got {value!r}")
    return value


def _check_seeds(value, where: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise LeaderboardError(f"{where}: seeds must be a positive count or a list of integers, got {value}")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        if len(set(value)) != len(value):
            raise LeaderboardError(f"{where}: seeds contain duplicates: {value}")
        return list(value)
    raise LeaderboardError(f"{where}: seeds must be a positive count or a list of integers, got {value!r}")


def _resolve_preset_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"preset file {path} does not exist; built-in presets: {available_presets()}")
        return path
    candidate = PRESET_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise LeaderboardError(
            f"unknown preset {str(name_or_path)!r}{_close(str(name_or_path), available_presets())}; built-in presets: "
            f"{available_presets()} (or pass the path of a YAML file)"
        )
    return candidate


def load_preset(name_or_path: str | Path) -> Preset:
    """Load and validate a preset by built-in name (``smoke``, ``quick``, ...) or YAML path.

    Unknown keys, agents, tasks, suites, config keys and malformed values raise :class:`LeaderboardError` naming the
    entry, the closest valid names and the fix.
    """
    path = _resolve_preset_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise LeaderboardError(f"preset {path} is not valid YAML: {error}") from None
    where = f"preset {path.name}"
    if not isinstance(raw, dict):
        raise LeaderboardError(f"{where} must be a YAML mapping of keys {sorted(PRESET_KEYS)}")
    _check_keys(raw, PRESET_KEYS, where)
    for required in ("agents", "tasks"):
        if required not in raw:
            raise LeaderboardError(f"{where}: missing required key {required!r}")

    agents = raw["agents"]
    if not isinstance(agents, list) or not agents:
        raise LeaderboardError(f"{where}: agents must be a non-empty list of {list(AGENT_NAMES)}")
    for agent in agents:
        if agent not in AGENT_NAMES:
            raise LeaderboardError(f"{where}: unknown agent {agent!r}{_close(str(agent), AGENT_NAMES)}; valid agents: "
                                   f"{list(AGENT_NAMES)}")
    if len(set(agents)) != len(agents):
        raise LeaderboardError(f"{where}: agents contain duplicates: {agents}")
    if not isinstance(raw["tasks"], list):
        raise LeaderboardError(f"{where}: tasks must be a list of task IDs or category:/suite: selectors")
    tasks = _expand_tasks(raw["tasks"], where)
    seeds = _check_seeds(raw.get("seeds", [0]), where)

    settings = dict(RUN_DEFAULTS)
    for key in RUN_SETTINGS:
        if key in raw:
            settings[key] = _check_setting(key, raw[key], where)

    suite_settings = raw.get("suite_settings") or {}
    _check_keys(suite_settings, set(SUITES), f"{where}: suite_settings")
    clean_suites = {}
    for suite, values in suite_settings.items():
        _check_keys(values, set(RUN_SETTINGS) | {"seeds", "agent_overrides"}, f"{where}: suite_settings.{suite}")
        clean = {}
        for key, value in values.items():
            if key == "seeds":
                clean[key] = _check_seeds(value, where)
            elif key == "agent_overrides":
                _check_keys(value, set(AGENT_NAMES) | {"all"}, f"{where}: suite_settings.{suite}.agent_overrides")
                _validate_overrides(value, f"{where}: suite_settings.{suite}")
                clean[key] = value
            else:
                clean[key] = _check_setting(key, value, where)
        clean_suites[suite] = clean

    overrides = raw.get("agent_overrides") or {}
    _check_keys(overrides, set(AGENT_NAMES) | {"all"}, f"{where}: agent_overrides")
    _validate_overrides(overrides, where)

    datasets = raw.get("datasets") or {}
    if not isinstance(datasets, dict):
        raise LeaderboardError(f"{where}: datasets must map dataset names to {{path: DIR}} or {{generate: {{...}}}}")
    from envs.catalogue import all_tasks

    dataset_names = {spec.dataset for spec in all_tasks().values()}
    for dataset, entry in datasets.items():
        if dataset not in dataset_names:
            raise LeaderboardError(f"{where}: unknown dataset {dataset!r}{_close(str(dataset), dataset_names)}")
        _check_keys(entry, DATASET_KEYS, f"{where}: datasets.{dataset}")
        if len(entry) != 1:
            raise LeaderboardError(f"{where}: datasets.{dataset} needs exactly one of {sorted(DATASET_KEYS)}")
        if "generate" in entry:
            _check_keys(entry["generate"] or {}, GENERATE_KEYS, f"{where}: datasets.{dataset}.generate")

    exclude = raw.get("exclude") or []
    if not isinstance(exclude, list):
        raise LeaderboardError(f"{where}: exclude must be a list of {{agent/task/suite/category: ...}} rules")
    for rule in exclude:
        _check_keys(rule, EXCLUDE_KEYS, f"{where}: exclude rule {rule}")

    name = str(raw.get("name", path.stem))
    if not name or "/" in name:
        raise LeaderboardError(f"{where}: name must be a non-empty string without '/', got {name!r}")
    return Preset(name=name, description=str(raw.get("description", "")).strip(), agents=list(agents), tasks=tasks,
                  seeds=seeds, settings=settings, agent_overrides=overrides, suite_settings=clean_suites,
                  datasets=datasets, exclude=exclude, source=path)


def _validate_overrides(overrides: dict, where: str) -> None:
    """Every override key must be a config key of the agent it names (``all``: of at least one agent)."""
    known = {agent: _agent_config_keys(agent) for agent in AGENT_NAMES}
    if any(keys is None for keys in known.values()):
        return  # agents package not importable here; the training run validates the keys itself
    for target, values in overrides.items():
        _check_keys(values, set().union(*known.values()) if target == "all" else known[target],
                    f"{where}: agent_overrides.{target}")


# ============================================================================ datasets
def prepare_datasets(preset: Preset, data_dir: Path, progress: bool = True) -> list[Path]:
    """Generate the preset's ``datasets: {NAME: {generate: ...}}`` entries into ``data_dir`` when missing."""
    made = []
    for dataset, entry in preset.datasets.items():
        if "generate" not in entry:
            continue
        if (data_dir / f"{dataset}.npz").is_file():
            continue
        from envs.generate import generate_manipulation_dataset

        options = entry["generate"] or {}
        name = dataset.removesuffix("-v0")
        if name.startswith("visual-"):
            raise LeaderboardError(f"datasets.{dataset}: generation of visual datasets is not supported by presets")
        train_path, _ = generate_manipulation_dataset(
            name, int(options.get("episodes", 50)), str(data_dir), workers=int(options.get("workers", 1)),
            seed=int(options.get("seed", 0)), progress=progress,
        )
        made.append(Path(train_path))
    return made


# ============================================================================ running one cell
def _train_config(cell: Cell, seed: int, out_dir: Path):
    from eval.train import TrainConfig

    return TrainConfig(
        agent=cell.agent, env_id=cell.env_id, seed=seed, agent_overrides=copy.deepcopy(cell.agent_overrides),
        dataset_path=cell.dataset_path, out_dir=str(out_dir / "runs"), **cell.settings,
    )


def register_cells(store, preset: Preset, cells: list[Cell], out_dir: Path) -> dict[str, list[int]]:
    """Create (or find) every run of every cell in the store, status ``pending``; returns cell -> run ids."""
    from eval.train import code_version

    version = code_version()
    run_ids = {}
    for cell in cells:
        ids = []
        for seed in cell.seeds:
            config = _train_config(cell, seed, out_dir)
            ids.append(store.create_run(
                agent=cell.agent, env_id=cell.env_id, seed=seed, config=config.record(),
                data_provenance={}, code_version=version, cell=cell.name, preset=preset.name,
            ))
        run_ids[cell.name] = ids
    return run_ids


def run_cell(cell: Cell, out_dir: str, run_ids: list[int]) -> dict:
    """Train every unfinished seed of one cell (resuming from checkpoints); never raises for a failed seed.

    Runs in a worker process (local pool or Ray). Returns {"cell", "statuses": {seed: status}, "messages"}.
    """
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from eval.store import ResultsStore
    from eval.train import train

    import fidec_gym  # noqa: F401  (registers the fidec/* IDs in this process)

    out = Path(out_dir)
    store = ResultsStore(out)
    statuses, messages = {}, {}
    for seed, run_id in zip(cell.seeds, run_ids):
        run = store.get_run(run_id)
        if run["status"] == "done":
            statuses[seed] = "done"
            continue
        store.set_status(run_id, "running", message=f"pid {os.getpid()} on {socket.gethostname()}")
        try:
            result = train(_train_config(cell, seed, out), store=store, run_id=run_id, resume=True, progress=False)
            status = result.status
            message = "" if status == "done" else store.get_run(run_id).get("message", "")
        except Exception as error:  # a failed seed is recorded; the grid goes on
            status = "failed"
            message = f"{type(error).__name__}: {error}"
            store.set_status(run_id, "failed", message=message[:2000] + "\n" + traceback.format_exc()[-2000:])
        if store.get_run(run_id)["status"] != status:
            store.set_status(run_id, status, message=message)
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
        raise LeaderboardError(f"invalid Ray address {address!r}; use HOST:PORT (e.g. 10.0.0.5:6379), "
                               "ray://HOST:10001 or 'auto'")
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
    from eval.store import ResultsStore

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
    result = GridResult(out_dir=out, total=len(cells), skipped=skipped, done=[], failed={})
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
                bar.set_postfix(failed=len(result.failed) + sum(1 for c in skipped if _cell_state(
                    store, run_ids[c]) == "failed"))
    finally:
        bar.close()
        store.close()
    return result


def _cell_error(cell: Cell, error: BaseException) -> dict:
    message = f"worker crashed: {type(error).__name__}: {error}"
    return {"cell": cell.name, "statuses": {seed: "failed" for seed in cell.seeds},
            "messages": {seed: message for seed in cell.seeds}}


def _mark_failed(out: Path, run_ids: list[int], message: str) -> None:
    from eval.store import ResultsStore

    store = ResultsStore(out)
    for run_id in run_ids:
        if store.get_run(run_id)["status"] != "done":
            store.set_status(run_id, "failed", message=message)
    store.close()


def _run_local(cells: list[Cell], out: Path, run_ids: dict, workers: Optional[int], _address):
    workers = workers or max(1, min(2, os.cpu_count() or 1))
    context = multiprocessing.get_context("spawn")  # JAX is not fork-safe
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(cells)), mp_context=context) as pool:
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
    from eval.store import DB_FILENAME, ResultsStore

    out = Path(out_dir).expanduser()
    if not (out / DB_FILENAME).is_file():
        raise FileNotFoundError(f"no results in {out} (no {DB_FILENAME}); start a grid with "
                                f"`fidec leaderboard run --preset NAME --out {out}`")
    store = ResultsStore(out)
    filters = {} if preset is None else {"preset": preset}
    cells: dict[str, dict] = {}
    for run in store.runs(**filters):
        name = run["cell"] or f"{run['agent']}/{run['env_id']}"
        entry = cells.setdefault(name, {"cell": name, "agent": run["agent"], "env_id": run["env_id"], "done": 0,
                                        "running": 0, "interrupted": 0, "failed": 0, "pending": 0, "messages": []})
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
