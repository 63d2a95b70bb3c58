"""Leaderboard presets: which agents × tasks × seeds × budget a grid runs, loaded from YAML and validated.

Built-in presets live in ``leaderboards/presets``; ``leaderboards/README.md`` documents the schema. Every mistake in a
preset (unknown key, agent, task, dataset or agent config key; malformed values) raises :class:`LeaderboardError`
naming the entry, the closest valid names and the fix, before anything runs.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import yaml

from fidec_gym.errors import ConfigError, ResultsNotFoundError
from fidec_gym.names import AGENT_NAMES

PRESET_DIR = Path(str(resources.files("fidec_gym.leaderboards") / "presets"))

# Run settings a preset may set (top level or per suite); they map one to one onto TrainConfig fields
# (fidec_gym.eval.run.config).
RUN_SETTINGS = {
    "offline_steps": int,
    "online_steps": int,
    "eval_interval": int,
    "eval_episodes": int,
    "eval_workers": int,
    "log_interval": int,
    "checkpoint_interval": int,
    "use_task_hyperparameters": bool,
    "divergence_table": str,
    "video_episodes": int,
    "video_frame_skip": int,
    "updates_per_dispatch": int,
}
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
GENERATE_KEYS = {"episodes", "seed", "workers"}
EXCLUDE_KEYS = {"agent", "task", "suite", "category"}
SUITES = ("ogbench", "visual", "d4rl", "toy")


class LeaderboardError(ConfigError):
    """Bad preset, results directory or backend; the message names the problem and the fix."""


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
                if self._excluded(agent, spec):
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


def _preset_advice(message: str) -> str:
    """A TrainConfig/agent-config message with its command-line spelling turned into the preset's YAML spelling:
    ``offline_steps (--steps)`` -> ``offline_steps``, ``--set key=value`` -> ``key: value``."""
    message = re.sub(r" \(--[a-z-]+\)", "", message)
    return re.sub(r"--set (\w+)=", r"\1: ", message)


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
                raise LeaderboardError(
                    f"{where}: cell {cell.name}, seed {seed}: {_preset_advice(str(error))}"
                ) from None


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
        from fidec_gym.agents import get_config
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
    from fidec_gym.envs.catalogue import all_tasks, list_tasks, task_info

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
            raise LeaderboardError(
                f"{where}: unknown key {key!r}{_close(str(key), valid)}; valid keys: {sorted(valid)}"
            )


def _check_scoped_settings(values, where: str) -> dict:
    """Run settings, ``seeds`` and ``agent_overrides`` for one suite or task, validated."""
    _check_keys(values, set(RUN_SETTINGS) | {"seeds", "agent_overrides"}, where)
    clean = {}
    for key, value in values.items():
        if key == "seeds":
            clean[key] = _check_seeds(value, where)
        elif key == "agent_overrides":
            _check_keys(value, set(AGENT_NAMES) | {"all"}, f"{where}.agent_overrides")
            _validate_overrides(value, where)
            clean[key] = value
        else:
            clean[key] = _check_setting(key, value, where)
    return clean


def _check_setting(key: str, value, where: str) -> Any:
    kind = RUN_SETTINGS[key]
    if value is None and key == "eval_workers":
        return None
    if kind is bool:
        if not isinstance(value, bool):
            raise LeaderboardError(f"{where}: {key} must be true or false, got {value!r}")
        return value
    if kind is int:
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())  # NaN and inf are not
        if isinstance(value, bool) or not whole or value < 0:
            raise LeaderboardError(f"{where}: {key} must be a non-negative integer, got {value!r}")
        if (
            key in ("eval_interval", "log_interval", "checkpoint_interval", "updates_per_dispatch", "video_frame_skip")
            and value < 1
        ):
            raise LeaderboardError(f"{where}: {key} must be at least 1, got {value!r}")
        return int(value)
    if not isinstance(value, str):
        raise LeaderboardError(f"{where}: {key} must be a string, got {value!r}")
    return value


def _check_generate(options, where: str) -> None:
    """``datasets.NAME.generate``: episodes >= 1, seed >= 0, workers >= 1 (or null), all whole numbers."""
    _check_keys(options, GENERATE_KEYS, where)
    for key, minimum in (("episodes", 1), ("seed", 0), ("workers", 1)):
        if key not in options or (key == "workers" and options[key] is None):
            continue
        value = options[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise LeaderboardError(f"{where}: {key} must be a whole number >= {minimum}, got {value!r}")


def _check_seeds(value, where: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise LeaderboardError(
                f"{where}: seeds must be a positive count or a list of integers >= 0, got {value} "
                "(e.g. seeds: 3 for seeds 0, 1, 2, or seeds: [0, 1, 2])"
            )
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        if len(set(value)) != len(value):
            raise LeaderboardError(f"{where}: seeds contain duplicates: {value}; list each seed once")
        negative = [s for s in value if s < 0]
        if negative:
            raise LeaderboardError(f"{where}: seeds must be >= 0, got {negative} in {value}")
        return list(value)
    raise LeaderboardError(
        f"{where}: seeds must be a positive count or a list of integers >= 0, got {value!r} "
        "(e.g. seeds: 3 for seeds 0, 1, 2, or seeds: [0, 1, 2])"
    )


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
    except UnicodeDecodeError as error:
        raise LeaderboardError(
            f"preset {path} is not a text file ({error.reason} at byte {error.start}); pass a YAML preset"
        ) from None
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
            raise LeaderboardError(
                f"{where}: unknown agent {agent!r}{_close(str(agent), AGENT_NAMES)}; valid agents: {list(AGENT_NAMES)}"
            )
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
    clean_suites = {
        suite: _check_scoped_settings(values, f"{where}: suite_settings.{suite}")
        for suite, values in suite_settings.items()
    }
    task_settings = raw.get("task_settings") or {}
    if not isinstance(task_settings, dict):
        kind = type(task_settings).__name__
        raise LeaderboardError(f"{where}: task_settings must be a mapping of task IDs to settings, got {kind}")
    clean_tasks = {}
    for task, values in task_settings.items():
        clean = _check_scoped_settings(values, f"{where}: task_settings.{task}")
        for env_id in _expand_tasks([task], f"{where}: task_settings"):  # a task ID or a category:/suite: selector
            if env_id not in tasks:
                raise LeaderboardError(
                    f"{where}: task_settings names {env_id!r}, which is not one of the preset's tasks"
                    f"{_close(env_id, tasks)}; add it to tasks or remove its settings"
                )
            clean_tasks[env_id] = clean

    overrides = raw.get("agent_overrides") or {}
    _check_keys(overrides, set(AGENT_NAMES) | {"all"}, f"{where}: agent_overrides")
    _validate_overrides(overrides, where)

    datasets = raw.get("datasets") or {}
    if not isinstance(datasets, dict):
        raise LeaderboardError(f"{where}: datasets must map dataset names to {{path: DIR}} or {{generate: {{...}}}}")
    from fidec_gym.envs.catalogue import all_tasks

    dataset_names = {spec.dataset for spec in all_tasks().values()}
    for dataset, entry in datasets.items():
        if dataset not in dataset_names:
            raise LeaderboardError(f"{where}: unknown dataset {dataset!r}{_close(str(dataset), dataset_names)}")
        _check_keys(entry, DATASET_KEYS, f"{where}: datasets.{dataset}")
        if len(entry) != 1:
            raise LeaderboardError(f"{where}: datasets.{dataset} needs exactly one of {sorted(DATASET_KEYS)}")
        if "path" in entry and (not isinstance(entry["path"], str) or not entry["path"].strip()):
            raise LeaderboardError(
                f"{where}: datasets.{dataset}.path must be the directory or file of the data as a string, got "
                f"{entry['path']!r}"
            )
        if "generate" in entry:
            _check_generate(entry["generate"] or {}, f"{where}: datasets.{dataset}.generate")

    exclude = raw.get("exclude") or []
    if not isinstance(exclude, list):
        raise LeaderboardError(f"{where}: exclude must be a list of {{agent/task/suite/category: ...}} rules")
    for rule in exclude:
        _check_keys(rule, EXCLUDE_KEYS, f"{where}: exclude rule {rule}")

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


def _numbers_from_text(values: dict, agents) -> None:
    """YAML 1.1 reads ``3e-4`` and ``1e6`` as text; where the agent's default is a number, such text is the number
    the user meant (converted in place)."""
    from fidec_gym.agents.config import default_config

    numeric = set()
    for agent in agents:
        numeric |= {
            k for k, v in default_config(agent).items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
    for key, value in list(values.items()):
        if key in numeric and isinstance(value, str) and any(c.isdigit() for c in value):
            try:
                values[key] = float(value) if any(c in value for c in ".eE") else int(value)
            except ValueError:
                pass  # not a number: check_overrides names the key and the expected type


def _validate_overrides(overrides: dict, where: str) -> None:
    """Every override key must be a config key of the agent it names (``all``: of at least one agent), and every
    value of the type that key takes (``check_overrides``: a whole number for a batch size, a list of widths...)."""
    found = {agent: _agent_config_keys(agent) for agent in AGENT_NAMES}
    if any(keys is None for keys in found.values()):
        return  # agents package not importable here; the training run validates the keys itself
    known: dict[str, set] = {agent: keys for agent, keys in found.items() if keys is not None}
    from fidec_gym.agents.config import check_overrides
    from fidec_gym.errors import FidecError

    for target, values in overrides.items():
        _check_keys(
            values or {},
            set().union(*known.values()) if target == "all" else known[target],
            f"{where}: agent_overrides.{target}",
        )
        _numbers_from_text(values or {}, AGENT_NAMES if target == "all" else (target,))
        for agent in AGENT_NAMES if target == "all" else (target,):
            mine = {key: value for key, value in (values or {}).items() if key in known[agent]}
            try:
                check_overrides(agent, mine)
            except FidecError as error:
                raise LeaderboardError(f"{where}: agent_overrides.{target}: {_preset_advice(str(error))}") from None
