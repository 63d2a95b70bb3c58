"""Success rate of an expert plus a maze planner on a maze's evaluation goals (docs/datasets.md §2.3).

* OGBench mazes (``antmaze-large-navigate`` ...): the five single-task environments ``<maze>-singletask-taskK-v0``
  (their start and goal cells, success within 0.5 of the goal, 1000 steps, termination at the goal), episodes spread
  evenly over the tasks, steered by OGBench's BFS subgoal oracle as in the navigate data.
* D4RL mazes (``antmaze-large-diverse-v2`` ...): the D4RL evaluation environment (frame ``d4rl``: D4RL's start cell
  and evaluation goal sampler, radius 0.5, horizon 700/1000), steered by the Q-iteration waypoint controller as in
  the D4RL data.

``noise`` adds Gaussian action noise (0: the expert alone; the data is made with 0.2).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

from fidec_gym.errors import ConfigError
from fidec_gym.files import atomic_write_json

from . import common
from .d4rl_antmaze import D4RLAntmazeEpisodes, parse_d4rl_antmaze
from .experts import PROVENANCE_FILE, ExpertPolicy, load_expert
from .mazes import oracle_subgoal_cell, unit, upside_down
from .navigate import NAVIGATE_DATASETS, parse_navigate_dataset

NUM_TASKS = 5


class OGBenchTaskEpisodes:
    """Episode ``index`` runs task ``index % 5 + 1`` of the maze's single-task environments."""

    def __init__(self, base: str, policy: ExpertPolicy, noise: float = 0.0):
        import ogbench

        self.policy = policy
        self.noise = float(noise)
        self.envs = {}
        maze = base[: -len("-navigate")]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*precision lowered by casting to float32.*")
            for task in range(1, NUM_TASKS + 1):
                self.envs[task] = ogbench.make_env_and_datasets(
                    f"{maze}-navigate-singletask-task{task}-v0", env_only=True
                )

    def episode(self, seed: int, index: int) -> dict[str, np.ndarray]:
        task = index % NUM_TASKS + 1
        env = self.envs[task]
        maze = env.unwrapped
        maze_map = np.asarray(maze.maze_map)
        seeds = common.EpisodeSeeds(seed, index)
        seeds.seed_globals(env)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*precision lowered by casting to float32.*")
            env.reset(seed=seeds.reset_seed)
            steps, success, done = 0, False, False
            while not done:
                xy = maze.get_xy()
                subgoal = oracle_subgoal_cell(maze_map, maze.xy_to_ij(xy), maze.xy_to_ij(maze.cur_goal_xy))
                state = maze.get_ob(ob_type="states")
                action = self.policy(np.concatenate([state[2:], unit(np.asarray(maze.ij_to_xy(subgoal)) - xy)]))
                if self.noise:
                    action = action + seeds.rng.normal(0.0, self.noise, action.shape)
                _, _, terminated, truncated, info = env.step(np.clip(action, -1.0, 1.0))
                steps += 1
                success = bool(info["success"])
                done = terminated or truncated
        return {
            "task": np.asarray([task]),
            "success": np.asarray([success]),
            "length": np.asarray([steps]),
            "upside_down": np.asarray([upside_down(maze.data.qpos)]),
        }

    def close(self) -> None:
        for env in self.envs.values():
            env.close()


class D4RLGoalEpisodes:
    """The D4RL evaluation distribution (start cell, goal sampler) of one antmaze task, frame ``d4rl``."""

    def __init__(self, task: str, policy: ExpertPolicy, noise: float = 0.0):
        self.driver = D4RLAntmazeEpisodes(task, policy, noise=noise)

    def episode(self, seed: int, index: int) -> dict[str, np.ndarray]:
        from .d4rl_antmaze import WAYPOINT_JITTER, WAYPOINT_RADIUS
        from .mazes import WaypointController

        d = self.driver
        seeds = common.EpisodeSeeds(seed, index)
        ob, info = d.env.reset(seed=seeds.reset_seed)
        goal_xy = info["goal"]
        controller = WaypointController(d.maze_map, d.env.cell_xy, d.xy_to_cell, WAYPOINT_RADIUS, WAYPOINT_JITTER)
        success, steps = False, 0
        while steps < d.horizon and not success:
            target = controller.target(ob[:2], goal_xy, seeds.rng)
            action = d.policy(np.concatenate([ob[2:], unit(target - ob[:2])]))
            if d.noise:
                action = action + seeds.rng.normal(0.0, d.noise, action.shape)
            ob, _, success, _, _ = d.env.step(np.clip(action, -1.0, 1.0))
            steps += 1
        return {
            "task": np.asarray([0]),
            "success": np.asarray([bool(success)]),
            "length": np.asarray([steps]),
            "upside_down": np.asarray([upside_down(ob[:15])]),
        }

    def close(self) -> None:
        self.driver.close()


def evaluate_maze_success(
    maze: str,
    expert: Optional[str | os.PathLike] = None,
    episodes: int = 50,
    seed: int = 0,
    noise: float = 0.0,
    workers: int = 1,
    record: bool = False,
    progress: bool = True,
) -> dict:
    """Success rate (overall and per task) of the expert with the maze's planner; ``record`` stores the result in
    the expert's ``expert.json`` under ``maze_success``."""
    if episodes < 1 or workers < 1:
        raise ConfigError(f"need episodes >= 1 and workers >= 1 (got {episodes}, {workers})")
    common.check_seed_and_noise(seed, noise)
    base, task = parse_navigate_dataset(maze), parse_d4rl_antmaze(maze)
    factory: Any
    if base is not None:
        if NAVIGATE_DATASETS[base][1] != "ant":
            raise ConfigError(f"{maze}: only ant mazes are evaluated here")
        policy = load_expert(expert, "ant", observation_dim=29, action_dim=8)
        factory, kwargs, key = OGBenchTaskEpisodes, {"base": base, "policy": policy, "noise": noise}, base
    elif task is not None:
        policy = load_expert(expert, "ant", observation_dim=29, action_dim=8)
        factory, kwargs, key = D4RLGoalEpisodes, {"task": task, "policy": policy, "noise": noise}, task
    else:
        raise ConfigError(
            f"{maze!r}: expected an OGBench ant maze (e.g. antmaze-large-navigate) or a D4RL antmaze "
            "task (e.g. antmaze-large-diverse-v2)"
        )
    results, seconds = common.collect(factory, kwargs, episodes, seed, workers, f"evaluating on {key}", progress)
    success = np.array([bool(r["success"][0]) for r in results])
    tasks = np.array([int(r["task"][0]) for r in results])
    lengths = np.array([int(r["length"][0]) for r in results])
    result = {
        "maze": key,
        "episodes": int(episodes),
        "success_rate": round(float(success.mean()), 4),
        "mean_length_successful": round(float(lengths[success].mean()), 1) if success.any() else None,
        "failures_upside_down": int(sum(bool(r["upside_down"][0]) for r, s in zip(results, success) if not s)),
        "noise": noise,
        "seed": seed,
        "seconds": round(seconds, 1),
        "expert": policy.path,
        "expert_sha256": policy.sha256,
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if base is not None:
        result["per_task"] = {
            f"task{t}": round(float(success[tasks == t].mean()), 4) for t in sorted(set(tasks.tolist()))
        }
    if record:
        provenance = Path(policy.path).parent / PROVENANCE_FILE
        if not provenance.is_file():
            raise ConfigError(f"--record needs {provenance} beside the expert; export the run first")
        info = json.loads(provenance.read_text())
        info.setdefault("maze_success", {})[f"{key} (noise {noise})"] = result
        atomic_write_json(provenance, info)
    return result
