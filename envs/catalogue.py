"""The task catalogue: every fidec-gym task ID with the facts needed to make, score and train on it.

Each entry is a :class:`TaskSpec`. The catalogue is plain data; registration with Gymnasium lives in
``envs.registration`` and the per-task agent hyperparameters in ``task_hyperparameters.csv`` beside this file.
"""

from __future__ import annotations

import csv
import difflib
import fnmatch
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fidec_gym.errors import ConfigError, UnknownNameError
from fidec_gym.names import AGENT_NAMES, base_agent

NAMESPACE = "fidec"

# --------------------------------------------------------------------------------------------------
# OGBench single-task bases: (base, observation shape, action dim, horizon, default task, category)
# Shapes and horizons from the ogbench package (docs/datasets.md §1.2).
# --------------------------------------------------------------------------------------------------
OGBENCH_BASES = (
    ("antmaze-large-navigate", (29,), 8, 1000, 1, "antmaze-large"),
    ("antmaze-giant-navigate", (29,), 8, 1000, 1, "antmaze-giant"),
    ("humanoidmaze-medium-navigate", (69,), 21, 2000, 1, "humanoidmaze-medium"),
    ("humanoidmaze-large-navigate", (69,), 21, 2000, 1, "humanoidmaze-large"),
    ("antsoccer-arena-navigate", (42,), 8, 1000, 4, "antsoccer-arena"),
    ("cube-single-play", (28,), 5, 200, 2, "cube-single"),
    ("cube-double-play", (37,), 5, 500, 2, "cube-double"),
    ("scene-play", (40,), 5, 750, 2, "scene"),
    ("puzzle-3x3-play", (55,), 5, 500, 4, "puzzle-3x3"),
    ("puzzle-4x4-play", (83,), 5, 500, 4, "puzzle-4x4"),
)
VISUAL_OBSERVATION_SHAPE = (64, 64, 3)
MANIPULATION_CATEGORIES = ("cube-single", "cube-double", "scene", "puzzle-3x3", "puzzle-4x4")

# D4RL reference returns for the normalised score 100 (R - min) / (max - min) (docs/datasets.md §4.6).
D4RL_REFERENCE = {
    "antmaze": (0.0, 1.0),
    "pen": (96.262799, 3076.8331017826877),
    "door": (-56.512833, 2880.5693087298737),
    "hammer": (-274.856578, 12794.134825156867),
    "relocate": (-6.425911, 4233.877797728884),
}
D4RL_ANTMAZE = ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse")
# Adroit: observation dim, action dim, D4RL horizon.
D4RL_ADROIT = {"pen": (45, 24, 100), "door": (39, 28, 200), "hammer": (46, 26, 200), "relocate": (39, 30, 200)}
D4RL_ADROIT_KINDS = ("human", "cloned", "expert")

# Toy landscapes (docs/toy_landscapes.md): id -> (landscape key, behaviour mean Q, best in-support Q).
TOY_LANDSCAPES = {
    "toy-bimodal-v0": ("T1", 0.217, 1.000),
    "toy-saddle-v0": ("T2", 0.493, 1.000),
    "toy-thin-manifold-v0": ("T3", -0.001, 1.239),
    "toy-arc-hotspot-v0": ("T4", 0.007, 0.387),
    "toy-five-lobes-v0": ("T5", 0.140, 0.995),
    "toy-crescent-v0": ("T6", 0.056, 0.798),
}


@dataclass(frozen=True)
class TaskSpec:
    """Everything the suite knows about one task ID."""

    name: str  # ID without the namespace, e.g. "cube-single-play-singletask-task2-v0"
    suite: str  # "ogbench" (state), "visual" (OGBench pixels), "d4rl", "toy"
    category: str  # e.g. "cube-single", "d4rl-antmaze", "d4rl-adroit", "toy"
    task_index: Optional[int]  # OGBench task 1..5 (the default alias resolves to its task); None elsewhere
    is_default_task: bool  # the un-suffixed OGBench "-singletask-v0" alias, or the task it resolves to
    horizon: int  # evaluation episode length (time limit)
    metric: str  # "success" (OGBench), "normalized_return" (D4RL), "value" (toy: Q of the chosen action)
    normalizer: tuple  # (low, high): normalised score = 100 (x - low) / (high - low), x = success or return
    observation_shape: tuple
    action_shape: tuple
    dataset: str  # dataset name: OGBench file stem, D4RL legacy name, or toy name
    source_name: str  # the name the underlying suite knows (OGBench env name, D4RL name, toy landscape key)
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def env_id(self) -> str:
        return f"{NAMESPACE}/{self.name}"

    @property
    def table_category(self) -> str:
        """Category label used by the paper's Table 2 (visual manipulation tasks form one category)."""
        if self.suite == "visual" and self.category.removeprefix("visual-") in MANIPULATION_CATEGORIES:
            return "visual-manipulation"
        return self.category

    def normalized_score(self, value: float) -> float:
        low, high = self.normalizer
        return 100.0 * (float(value) - low) / (high - low)

    def as_dict(self) -> dict:
        return {
            "env_id": self.env_id,
            "suite": self.suite,
            "category": self.category,
            "table_category": self.table_category,
            "task_index": self.task_index,
            "is_default_task": self.is_default_task,
            "horizon": self.horizon,
            "metric": self.metric,
            "normalizer": self.normalizer,
            "observation_shape": self.observation_shape,
            "action_shape": self.action_shape,
            "dataset": self.dataset,
            "source_name": self.source_name,
        }


def _ogbench_specs() -> list[TaskSpec]:
    specs = []
    for visual in (False, True):
        for base, obs_shape, act_dim, horizon, default_task, category in OGBENCH_BASES:
            if visual and base.startswith("antsoccer"):
                continue  # OGBench has no visual antsoccer
            prefix = "visual-" if visual else ""
            dataset = f"{prefix}{base}-v0"
            for task in (None, 1, 2, 3, 4, 5):
                suffix = "" if task is None else f"-task{task}"
                name = f"{prefix}{base}-singletask{suffix}-v0"
                specs.append(
                    TaskSpec(
                        name=name,
                        suite="visual" if visual else "ogbench",
                        category=f"visual-{category}" if visual else category,
                        task_index=default_task if task is None else task,
                        is_default_task=(task is None or task == default_task),
                        horizon=horizon,
                        metric="success",
                        normalizer=(0.0, 1.0),
                        observation_shape=VISUAL_OBSERVATION_SHAPE if visual else obs_shape,
                        action_shape=(act_dim,),
                        dataset=dataset,
                        source_name=name,
                        extra={"alias": task is None},
                    )
                )
    return specs


def _d4rl_specs() -> list[TaskSpec]:
    specs = []
    for maze in D4RL_ANTMAZE:
        name = f"antmaze-{maze}-v2"
        specs.append(
            TaskSpec(
                name=name,
                suite="d4rl",
                category="d4rl-antmaze",
                task_index=None,
                is_default_task=False,
                horizon=700 if maze.startswith("umaze") else 1000,
                metric="normalized_return",
                normalizer=D4RL_REFERENCE["antmaze"],
                observation_shape=(29,),
                action_shape=(8,),
                dataset=name,
                source_name=name,
                extra={"minari_id": f"D4RL/antmaze/{maze}-v1"},
            )
        )
    for hand, (obs_dim, act_dim, horizon) in D4RL_ADROIT.items():
        for kind in D4RL_ADROIT_KINDS:
            name = f"{hand}-{kind}-v1"
            specs.append(
                TaskSpec(
                    name=name,
                    suite="d4rl",
                    category="d4rl-adroit",
                    task_index=None,
                    is_default_task=False,
                    horizon=horizon,
                    metric="normalized_return",
                    normalizer=D4RL_REFERENCE[hand],
                    observation_shape=(obs_dim,),
                    action_shape=(act_dim,),
                    dataset=name,
                    source_name=name,
                    extra={"minari_id": f"D4RL/{hand}/{kind}-v2"},
                )
            )
    return specs


def _toy_specs() -> list[TaskSpec]:
    return [
        TaskSpec(
            name=name,
            suite="toy",
            category="toy",
            task_index=None,
            is_default_task=False,
            horizon=1,
            metric="value",
            normalizer=(behaviour_q, best_q),
            observation_shape=(1,),
            action_shape=(2,),
            dataset=name,
            source_name=landscape,
        )
        for name, (landscape, behaviour_q, best_q) in TOY_LANDSCAPES.items()
    ]


@functools.lru_cache(maxsize=1)
def all_tasks() -> dict[str, TaskSpec]:
    """Every task, keyed by full Gymnasium ID (``fidec/...``)."""
    return {spec.env_id: spec for spec in _ogbench_specs() + _d4rl_specs() + _toy_specs()}


class UnknownTaskError(UnknownNameError):
    """An ID that is not in the catalogue; the message suggests the closest names."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


def _normalise_id(env_id: str) -> str:
    if not isinstance(env_id, str):
        raise UnknownTaskError(
            f"a task ID is a string such as 'fidec/toy-bimodal-v0', got {type(env_id).__name__} {env_id!r}; list "
            "all IDs with `fidec tasks` or fidec_gym.list_tasks()"
        )
    env_id = env_id.strip()
    return env_id if env_id.startswith(f"{NAMESPACE}/") else f"{NAMESPACE}/{env_id}"


def task_info(env_id: str) -> TaskSpec:
    """The :class:`TaskSpec` of ``env_id`` (with or without the ``fidec/`` namespace)."""
    tasks = all_tasks()
    key = _normalise_id(env_id)
    if key not in tasks:
        close = difflib.get_close_matches(key, list(tasks), n=5, cutoff=0.6)
        hint = ("Did you mean: " + ", ".join(close) + "?") if close else "No similar ID found."
        raise UnknownTaskError(
            f"unknown task ID {env_id!r}. {hint} List all IDs with `fidec tasks` or fidec_gym.list_tasks()."
        )
    return tasks[key]


def numbered_task_id(env_id: str) -> str:
    """The numbered ID an un-suffixed OGBench alias stands for (``...-singletask-v0`` is the category's default
    task, e.g. ``...-singletask-task2-v0``); any other ID is returned as it is."""
    spec = task_info(env_id)
    if not spec.extra.get("alias"):
        return env_id
    return env_id.replace("-singletask-v0", f"-singletask-task{spec.task_index}-v0")


def list_tasks(suite: Optional[str] = None, category: Optional[str] = None) -> list[str]:
    """Task IDs, optionally filtered by suite ("ogbench", "visual", "d4rl", "toy") and category."""
    tasks = all_tasks().values()
    suites = {spec.suite for spec in tasks}
    if suite is not None and suite not in suites:
        raise ConfigError(f"unknown suite {suite!r}; valid suites: {sorted(suites)}")
    categories = {spec.category for spec in tasks} | {spec.table_category for spec in tasks}
    if category is not None and category not in categories:
        close = difflib.get_close_matches(category, sorted(categories), n=3)
        raise ConfigError(f"unknown category {category!r}; closest: {close}; valid: {sorted(categories)}")
    return [
        spec.env_id
        for spec in tasks
        if (suite is None or spec.suite == suite)
        and (category is None or category in (spec.category, spec.table_category))
    ]


# --------------------------------------------------------------------------------------------------
# Per-task agent hyperparameters (data: task_hyperparameters.csv)
# --------------------------------------------------------------------------------------------------
HYPERPARAMETER_FILE = Path(__file__).with_name("task_hyperparameters.csv")
DIVERGENCE_TABLES = ("paper", "fidec_scripts", "deflow_readme")


@functools.lru_cache(maxsize=1)
def _hyperparameter_rows() -> tuple:
    with open(HYPERPARAMETER_FILE, newline="") as f:
        return tuple(csv.DictReader(f))


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def task_hyperparameters(
    env_id: str, agent: str, divergence_table: str = "paper", offline_to_online: bool = False
) -> dict:
    """Config overrides of ``agent`` for task ``env_id`` from the paper's appendix and the official run commands.

    ``divergence_table`` picks the δ table (docs/algorithms.md D4); ``offline_to_online`` picks the FQL α of
    docs/algorithms.md §10.4 where it differs.
    Later rows override earlier ones, so the file lists general patterns first.
    """
    if divergence_table not in DIVERGENCE_TABLES:
        raise ConfigError(f"unknown divergence_table {divergence_table!r}; valid: {list(DIVERGENCE_TABLES)}")
    name = task_info(env_id).name
    if agent not in AGENT_NAMES:
        close = difflib.get_close_matches(str(agent), AGENT_NAMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownNameError(f"unknown agent {agent!r}{hint}; valid agents: {', '.join(AGENT_NAMES)}")
    agent = base_agent(agent)  # a named variant (fidec-official) uses its base agent's per-task values
    wanted_variants = {"", divergence_table if divergence_table != "paper" else ""}
    if offline_to_online:
        wanted_variants.add("offline_to_online")
    overrides: dict = {}
    for variant_pass in ("", "fidec_scripts", "deflow_readme", "offline_to_online"):
        if variant_pass not in wanted_variants:
            continue
        for row in _hyperparameter_rows():
            if row["variant"] != variant_pass or row["agent"] != agent:
                continue
            if fnmatch.fnmatchcase(name, row["task_pattern"]):
                overrides[row["key"]] = _parse_value(row["value"])
    return overrides
