"""Leaderboard presets: which agents × tasks × seeds × budget a grid runs, loaded from YAML and validated.

Built-in presets live in ``leaderboards/presets``; ``leaderboards/README.md`` documents the schema. Every mistake in a
preset (unknown key, agent, task, dataset or agent config key; malformed values) raises :class:`LeaderboardError`
naming the entry, the closest valid names and the fix, before anything runs.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Optional

import yaml

from fidec_gym.errors import ResultsNotFoundError
from fidec_gym.eval.grid.preset_checks import (
    RUN_SETTINGS,
    LeaderboardError,
    agent_config_keys,
    check_generate,
    check_keys,
    check_scoped_settings,
    check_seeds,
    check_setting,
    did_you_mean,
    expand_tasks,
    preset_advice,
    validate_overrides,
)
from fidec_gym.names import AGENT_NAMES

PRESET_DIR = Path(str(resources.files("fidec_gym.leaderboards") / "presets"))

# The run settings of a preset that leaves them out: the paper's protocol for state-based OGBench.
RUN_DEFAULTS = {
    "offline_steps": 1_000_000,
    "online_steps": 0,
    "eval_interval": 100_000,
    "eval_episodes": 50,
    "eval_workers": None,
    "log_interval": 5_000,
    "checkpoint_interval": 100_000,
    "use_task_hyperparameters": True,
    "divergence_table": "paper",
    "video_episodes": 0,
    "video_frame_skip": 1,
    "updates_per_dispatch": 1,
}
PRESET_KEYS = {
    "name",
    "description",
    "agents",
    "tasks",
    "seeds",
    "agent_overrides",
    "suite_settings",
    "task_settings",
    "datasets",
    "exclude",
    *RUN_SETTINGS,
}
DATASET_KEYS = {"path", "generate"}
EXCLUDE_KEYS = {"agent", "task", "suite", "category"}
SUITES = ("ogbench", "visual", "d4rl", "toy")


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
    task_settings: dict = field(default_factory=dict)  # task ID -> settings over its suite's (e.g. a longer budget)

    def cells(self, data_dir: Optional[Path] = None) -> list[Cell]:
        """Every (agent, task) cell, tasks outer and agents in the preset's order; the pool's affinity, not this
        order, keeps a worker on cells that reuse its programs (:func:`fidec_gym.eval.grid.cells.program_group`)."""
        from fidec_gym.envs.catalogue import task_info

        cells = []
        for env_id in self.tasks:
            for agent in self.agents:
                spec = task_info(env_id)
                # The preset's settings, then its suite's, then the task's own: the narrower scope wins.
                scopes = [self.suite_settings.get(spec.suite, {}), self.task_settings.get(spec.env_id, {})]
                scoped = {key: value for scope in scopes for key, value in scope.items() if key != "agent_overrides"}
                seeds = scoped.pop("seeds", self.seeds)
                settings = {**self.settings, **scoped}
                dataset_path = self.dataset_path(spec.dataset, data_dir)
                if self._excluded(agent, spec) or not seeds:  # no seeds: a narrowed preset left this task none
                    continue
                overrides = self.overrides_for(agent)
                for scope in scopes:
                    overrides = {**overrides, **_merged_overrides(scope.get("agent_overrides", {}), agent)}
                cells.append(
                    Cell(
                        name=f"{self.name}:{agent}:{spec.name}",
                        agent=agent,
                        env_id=spec.env_id,
                        seeds=tuple(seeds),
                        settings=settings,
                        agent_overrides=overrides,
                        dataset_path=dataset_path,
                    )
                )
        return cells

    def narrowed(
        self, agents: Optional[list[str]] = None, tasks: Optional[list[str]] = None, seeds: Optional[list[int]] = None
    ) -> Preset:
        """This preset restricted to some of its agents, tasks and seeds. Names and settings stay the preset's, so
        the cells it runs are the full preset's cells: a grid too large for one sitting is run a few cells at a time
        into one results directory, and the runs it leaves alone are not touched."""
        from fidec_gym.envs.catalogue import numbered_task_id, task_info

        narrowed = copy.deepcopy(self)
        if agents is not None:
            for agent in agents:
                if agent not in self.agents:
                    raise LeaderboardError(
                        f"--agents: {agent!r} is not an agent of preset {self.name}{did_you_mean(agent, self.agents)}; "
                        f"its agents: {', '.join(self.agents)}"
                    )
            narrowed.agents = [agent for agent in self.agents if agent in agents]
        if tasks is not None:
            chosen = []
            for entry in tasks:  # an ID must be the preset's; a selector picks the preset's tasks it covers
                ids = expand_tasks([entry], "--tasks")
                selector = entry.startswith(("category:", "suite:"))
                if not selector:  # OGBench's un-suffixed ID names the same cell as its numbered default task
                    ids = [numbered_task_id(ids[0])]
                if not set(ids) & set(self.tasks) or not (selector or ids[0] in self.tasks):
                    hint = "" if selector else did_you_mean(ids[0], self.tasks)
                    raise LeaderboardError(
                        f"--tasks: {entry} is not {'in' if selector else 'a task of'} preset {self.name}{hint}; "
                        f"its tasks: {', '.join(self.tasks)}"
                    )
                chosen += ids
            narrowed.tasks = [env_id for env_id in self.tasks if env_id in chosen]
        if seeds is not None:
            known = sorted({seed for cell in self.cells() for seed in cell.seeds})
            missing = [seed for seed in seeds if seed not in known]
            if missing:
                raise LeaderboardError(f"--seeds: {missing} not among preset {self.name}'s seeds {known}")
            narrowed.seeds = [seed for seed in self.seeds if seed in seeds]
            for scope in [*narrowed.suite_settings.values(), *narrowed.task_settings.values()]:
                if "seeds" in scope:
                    scope["seeds"] = [seed for seed in scope["seeds"] if seed in seeds]
        used = {task_info(env_id).dataset for env_id in narrowed.tasks}
        narrowed.datasets = {name: entry for name, entry in narrowed.datasets.items() if name in used}
        if not any(cell.seeds for cell in narrowed.cells()):
            raise LeaderboardError(
                f"preset {self.name}: no cell has the agents, tasks and seeds asked for; "
                f"`fidec leaderboard plan --preset {self.name}` lists its cells"
            )
        return narrowed

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
                (key == "agent" and value == agent)
                or (key == "task" and spec.env_id == _task_id(value))
                or (key == "suite" and value == spec.suite)
                or (key == "category" and value in (spec.category, spec.table_category))
                for key, value in rule.items()
            ):
                return True
        return False


def train_config(cell: Cell, seed: int, results_dir: str | Path):
    """The :class:`~fidec_gym.eval.run.config.TrainConfig` of one seed of a cell (not validated here)."""
    from fidec_gym.eval.run.config import TrainConfig

    return TrainConfig(
        agent=cell.agent,
        env_id=cell.env_id,
        seed=seed,
        agent_overrides=copy.deepcopy(cell.agent_overrides),
        dataset_path=cell.dataset_path,
        results_dir=str(results_dir),
        **cell.settings,
    )


def _validate_cells(preset: Preset, where: str) -> None:
    """Every cell's run settings through ``TrainConfig.validate`` (types, ranges, a step budget) before anything
    runs; the preset names the cell and the key. Dataset paths are checked when the cell trains."""
    from fidec_gym.errors import FidecError

    for cell in preset.cells():
        for seed in cell.seeds:
            config = train_config(dataclasses.replace(cell, dataset_path=None), seed, ".")
            try:
                config.validate()
            except FidecError as error:
                raise LeaderboardError(f"{where}: cell {cell.name}, seed {seed}: {preset_advice(str(error))}") from None


def _merged_overrides(overrides: dict, agent: str) -> dict:
    """``overrides["all"]`` restricted to the keys ``agent`` knows, then ``overrides[agent]``."""
    merged = {}
    known = agent_config_keys(agent)
    for key, value in (overrides.get("all") or {}).items():
        if known is None or key in known:
            merged[key] = copy.deepcopy(value)
    merged.update(copy.deepcopy(overrides.get(agent) or {}))
    return merged


def _task_id(name: str) -> str:
    return name if name.startswith("fidec/") else f"fidec/{name}"


def available_presets() -> list[str]:
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))


def _resolve_preset_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    candidate = PRESET_DIR / f"{name_or_path}.yaml"
    if candidate.is_file() and path.suffix not in (".yaml", ".yml"):
        return candidate  # a built-in name, even where a folder of that name (its results, say) is here
    if path.is_dir() and path.suffix in (".yaml", ".yml"):
        raise LeaderboardError(f"preset {path} is a directory, not a YAML file; pass the preset file itself")
    if path.suffix in (".yaml", ".yml") or path.exists():
        raise ResultsNotFoundError(f"preset file {path} does not exist; built-in presets: {available_presets()}")
    if not candidate.is_file():
        raise LeaderboardError(
            f"unknown preset {str(name_or_path)!r}{did_you_mean(str(name_or_path), available_presets())}; "
            f"built-in presets: {available_presets()} (or pass the path of a YAML file)"
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
    except UnicodeDecodeError as error:
        raise LeaderboardError(
            f"preset {path} is not a text file ({error.reason} at byte {error.start}); pass a YAML preset"
        ) from None
    where = f"preset {path.name}"
    if not isinstance(raw, dict):
        raise LeaderboardError(f"{where} must be a YAML mapping of keys {sorted(PRESET_KEYS)}")
    check_keys(raw, PRESET_KEYS, where)
    for required in ("agents", "tasks"):
        if required not in raw:
            raise LeaderboardError(f"{where}: missing required key {required!r}")

    agents = raw["agents"]
    if not isinstance(agents, list) or not agents:
        raise LeaderboardError(f"{where}: agents must be a non-empty list of {list(AGENT_NAMES)}")
    for agent in agents:
        if agent not in AGENT_NAMES:
            raise LeaderboardError(
                f"{where}: unknown agent {agent!r}{did_you_mean(str(agent), AGENT_NAMES)}; "
                f"valid agents: {list(AGENT_NAMES)}"
            )
    if len(set(agents)) != len(agents):
        raise LeaderboardError(f"{where}: agents contain duplicates: {agents}")
    if not isinstance(raw["tasks"], list):
        raise LeaderboardError(f"{where}: tasks must be a list of task IDs or category:/suite: selectors")
    tasks = expand_tasks(raw["tasks"], where)
    seeds = check_seeds(raw.get("seeds", [0]), where)

    settings = dict(RUN_DEFAULTS)
    for key in RUN_SETTINGS:
        if key in raw:
            settings[key] = check_setting(key, raw[key], where)

    suite_settings = raw.get("suite_settings") or {}
    check_keys(suite_settings, set(SUITES), f"{where}: suite_settings")
    clean_suites = {
        suite: check_scoped_settings(values, f"{where}: suite_settings.{suite}")
        for suite, values in suite_settings.items()
    }
    task_settings = raw.get("task_settings") or {}
    if not isinstance(task_settings, dict):
        kind = type(task_settings).__name__
        raise LeaderboardError(f"{where}: task_settings must be a mapping of task IDs to settings, got {kind}")
    clean_tasks = {}
    for task, values in task_settings.items():
        clean = check_scoped_settings(values, f"{where}: task_settings.{task}")
        for env_id in expand_tasks([task], f"{where}: task_settings"):  # a task ID or a category:/suite: selector
            if env_id not in tasks:
                raise LeaderboardError(
                    f"{where}: task_settings names {env_id!r}, which is not one of the preset's tasks"
                    f"{did_you_mean(env_id, tasks)}; add it to tasks or remove its settings"
                )
            clean_tasks[env_id] = clean

    overrides = raw.get("agent_overrides") or {}
    check_keys(overrides, set(AGENT_NAMES) | {"all"}, f"{where}: agent_overrides")
    validate_overrides(overrides, where)

    datasets = raw.get("datasets") or {}
    if not isinstance(datasets, dict):
        raise LeaderboardError(f"{where}: datasets must map dataset names to {{path: DIR}} or {{generate: {{...}}}}")
    from fidec_gym.envs.catalogue import all_tasks

    dataset_names = {spec.dataset for spec in all_tasks().values()}
    for dataset, entry in datasets.items():
        if dataset not in dataset_names:
            raise LeaderboardError(f"{where}: unknown dataset {dataset!r}{did_you_mean(str(dataset), dataset_names)}")
        check_keys(entry, DATASET_KEYS, f"{where}: datasets.{dataset}")
        if len(entry) != 1:
            raise LeaderboardError(f"{where}: datasets.{dataset} needs exactly one of {sorted(DATASET_KEYS)}")
        if "path" in entry and (not isinstance(entry["path"], str) or not entry["path"].strip()):
            raise LeaderboardError(
                f"{where}: datasets.{dataset}.path must be the directory or file of the data as a string, got "
                f"{entry['path']!r}"
            )
        if "generate" in entry:
            check_generate(entry["generate"] or {}, f"{where}: datasets.{dataset}.generate")

    exclude = raw.get("exclude") or []
    if not isinstance(exclude, list):
        raise LeaderboardError(f"{where}: exclude must be a list of {{agent/task/suite/category: ...}} rules")
    for rule in exclude:
        check_keys(rule, EXCLUDE_KEYS, f"{where}: exclude rule {rule}")

    name = str(raw.get("name", path.stem))
    if not name or "/" in name or ":" in name:
        raise LeaderboardError(f"{where}: name must be a non-empty string without '/' or ':', got {name!r}")
    preset = Preset(
        name=name,
        description=str(raw.get("description", "")).strip(),
        agents=list(agents),
        tasks=tasks,
        seeds=seeds,
        settings=settings,
        agent_overrides=overrides,
        suite_settings=clean_suites,
        datasets=datasets,
        exclude=exclude,
        source=path,
        task_settings=clean_tasks,
    )
    if not preset.cells():
        raise LeaderboardError(f"{where}: the exclude rules remove every cell; nothing would run")
    _validate_cells(preset, where)
    return preset
