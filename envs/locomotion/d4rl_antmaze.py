"""D4RL ``antmaze-*-v2`` datasets made here with a self-trained expert, in D4RL's legacy hdf5 layout and frame
(docs/datasets.md §2.3).

The protocol is Minari's regeneration of D4RL's data: every episode (700 steps for umaze, 1000 otherwise) starts in a
cell drawn from the dataset's start cells and drives to a goal drawn from its goal cells, both placed with
Gymnasium-Robotics' U(-1, 1) m position noise; a waypoint controller follows the cells of a Q-iteration plan over
the maze (waypoints jittered by -U(0, 0.2) m, the last one the goal itself) and steers the goal-reaching expert
towards the current waypoint; Gaussian action noise 0.2; the goal is not changed when it is reached, so the ant
stays around it until the episode ends. Start and goal cells: umaze the fixed D4RL start and evaluation goal;
umaze-diverse, medium-play and large-play any free cell (Minari's maps without marked cells); medium-diverse and
large-diverse the cells marked in Gymnasium-Robotics' ``*_DIVERSE_GR`` maps.

Why hdf5 in the ``d4rl`` frame: ``load_dataset("fidec/antmaze-*-v2")`` reads a ``<task>.hdf5`` before any Minari
dataset, and its legacy reader and the default ``frame="d4rl"`` environment agree on coordinates (D4RL's start cell at
the origin, y growing with the row). That environment also has D4RL's ant physics (0.02 s steps, gear 30, soft
contacts), which is the physics of OGBench's ant that the expert is trained on; the ``minari`` frame uses Gymnasium's
ant (0.01 s, gear 150), on which the expert does not transfer. And it needs neither Minari's collector nor JAX.

Rows: ``observations`` (29-d, the state before the action), ``actions``, ``rewards`` (1 within 0.5 of the goal after
the action), ``terminals`` (= rewards: D4RL marks goal arrival, the trajectory goes on), ``timeouts`` (the last row of
each episode), ``infos/goal``, ``infos/qpos`` (15), ``infos/qvel`` (14). A ``<task>.meta.json`` sidecar marks the
file ``generated``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from fidec_gym.envs import datafiles
from fidec_gym.errors import ConfigError

from . import common
from .experts import ExpertPolicy, load_expert
from .mazes import WaypointController, free_cells, unit, upside_down

# task -> (maze, Gymnasium-Robotics map giving start/goal cells or None for D4RL's r/g cells, default episodes)
D4RL_ANTMAZE_DATASETS = {
    "antmaze-umaze-v2": ("umaze", None, 1430),
    "antmaze-umaze-diverse-v2": ("umaze", "U_MAZE", 1430),
    "antmaze-medium-play-v2": ("medium", "MEDIUM_MAZE", 1000),
    "antmaze-medium-diverse-v2": ("medium", "MEDIUM_MAZE_DIVERSE_GR", 1000),
    "antmaze-large-play-v2": ("large", "LARGE_MAZE", 1000),
    "antmaze-large-diverse-v2": ("large", "LARGE_MAZE_DIVERSE_GR", 1000),
}
DEFAULT_NOISE = 0.2
POSITION_NOISE = 1.0  # Gymnasium-Robotics: U(-0.25, 0.25) x 4 m cells
WAYPOINT_RADIUS = 0.45  # Minari's waypoint threshold
WAYPOINT_JITTER = 0.2


def parse_d4rl_antmaze(name: str) -> Optional[str]:
    stem = name.strip()
    stem = stem[len("fidec/") :] if stem.startswith("fidec/") else stem
    if not stem.endswith("-v2"):
        stem = f"{stem}-v2"
    return stem if stem in D4RL_ANTMAZE_DATASETS else None


def layout_map(maze: str) -> np.ndarray:
    from fidec_gym.envs.d4rl_env import D4RL_MAZES

    return np.array([[1 if symbol == "#" else 0 for symbol in line] for line in D4RL_MAZES[maze]])


def start_and_goal_cells(task: str) -> tuple[list, list]:
    """Start cells and goal cells of a D4RL antmaze dataset, as (row, col) in D4RL's layout."""
    from fidec_gym.envs.d4rl_env import D4RL_MAZES, _find_cell

    maze, map_name, _ = D4RL_ANTMAZE_DATASETS[task]
    if map_name is None:
        layout = D4RL_MAZES[maze]
        return [_find_cell(layout, "r")], [_find_cell(layout, "g")]
    from gymnasium_robotics.envs.maze import maps

    grid = getattr(maps, map_name)
    marked = [(i, j) for i, row in enumerate(grid) for j, v in enumerate(row) if v in ("c", "g", "r")]
    walls = np.array([[1 if v == 1 else 0 for v in row] for row in grid])
    if not np.array_equal(walls, layout_map(maze)):
        raise ConfigError(f"Gymnasium-Robotics' {map_name} no longer matches D4RL's {maze} layout")
    cells = marked or free_cells(walls)
    return list(cells), list(cells)


class D4RLAntmazeEpisodes:
    """The D4RL-frame antmaze simulator driven by the expert through the Q-iteration waypoint controller."""

    def __init__(self, task: str, policy: ExpertPolicy, horizon: Optional[int] = None, noise: float = DEFAULT_NOISE):
        from fidec_gym.envs.catalogue import task_info
        from fidec_gym.envs.d4rl_env import D4RLAntMazeEnv

        maze = D4RL_ANTMAZE_DATASETS[task][0]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore")
            self.env = D4RLAntMazeEnv(maze=maze, frame="d4rl")
        self.maze_map = layout_map(maze)
        self.starts, self.goals = start_and_goal_cells(task)
        self.horizon = int(task_info(f"fidec/{task}").horizon if horizon is None else horizon)
        self.policy = policy
        self.noise = float(noise)
        origin = self.env.cell_xy((0, 0))
        self._origin = origin
        self._step = np.array([self.env.cell_xy((0, 1))[0] - origin[0], self.env.cell_xy((1, 0))[1] - origin[1]])

    def xy_to_cell(self, xy) -> tuple[int, int]:
        col = int(np.floor((xy[0] - self._origin[0]) / self._step[0] + 0.5))
        row = int(np.floor((xy[1] - self._origin[1]) / self._step[1] + 0.5))
        return row, col

    def episode(self, seed: int, index: int) -> dict[str, np.ndarray]:
        seeds = common.EpisodeSeeds(seed, index)
        seeds.seed_globals(self.env)
        rng = seeds.rng
        goal_cell = self.goals[rng.integers(len(self.goals))]
        start_cell = self.starts[rng.integers(len(self.starts))]
        for _ in range(100):  # Gymnasium-Robotics: never start in the goal's cell
            if start_cell != goal_cell or len(self.starts) == 1:
                break
            start_cell = self.starts[rng.integers(len(self.starts))]
        goal_xy = self.env.cell_xy(goal_cell) + rng.uniform(-POSITION_NOISE, POSITION_NOISE, 2)
        start_xy = self.env.cell_xy(start_cell) + rng.uniform(-POSITION_NOISE, POSITION_NOISE, 2)
        controller = WaypointController(
            self.maze_map, self.env.cell_xy, self.xy_to_cell, WAYPOINT_RADIUS, WAYPOINT_JITTER
        )
        ob, _ = self.env.reset(seed=seeds.reset_seed, options={"start_xy": start_xy, "goal_xy": goal_xy})
        columns: dict[str, list] = {
            k: []
            for k in (
                "observations",
                "actions",
                "rewards",
                "terminals",
                "timeouts",
                "infos/goal",
                "infos/qpos",
                "infos/qvel",
            )
        }
        for t in range(self.horizon):
            xy = ob[:2]
            target = controller.target(xy, goal_xy, rng)
            action = self.policy(np.concatenate([ob[2:], unit(target - xy)]))
            action = np.clip(action + rng.normal(0.0, self.noise, action.shape), -1.0, 1.0)
            next_ob, reward, success, _, _ = self.env.step(action)
            columns["observations"].append(ob)
            columns["actions"].append(action)
            columns["rewards"].append(reward)
            columns["terminals"].append(success)
            columns["timeouts"].append(t == self.horizon - 1)
            columns["infos/goal"].append(goal_xy)
            columns["infos/qpos"].append(ob[:15])
            columns["infos/qvel"].append(ob[15:29])
            ob = next_ob
        bools = ("terminals", "timeouts")
        return {k: np.asarray(v, dtype=bool if k in bools else np.float32) for k, v in columns.items()}

    def close(self) -> None:
        self.env.close()


def generate_d4rl_antmaze_dataset(
    name: str,
    num_episodes: Optional[int],
    out_dir: os.PathLike | str,
    workers: int = 1,
    seed: int = 0,
    expert: Optional[str | os.PathLike] = None,
    noise: float = DEFAULT_NOISE,
    progress: bool = True,
    max_episode_steps: Optional[int] = None,
) -> Path:
    """Write ``<task>.hdf5`` and ``<task>.meta.json`` into ``out_dir`` (see the module docstring). Returns the hdf5
    path; nothing is written unless it is complete."""
    task = parse_d4rl_antmaze(name)
    if task is None:
        raise ConfigError(f"{name!r} is not a D4RL antmaze dataset; valid: {', '.join(D4RL_ANTMAZE_DATASETS)}")
    from fidec_gym.envs.catalogue import task_info

    num_episodes = D4RL_ANTMAZE_DATASETS[task][2] if num_episodes is None else int(num_episodes)
    horizon = task_info(f"fidec/{task}").horizon if max_episode_steps is None else int(max_episode_steps)
    common.check_counts(num_episodes, workers, horizon)
    common.check_seed_and_noise(seed, noise)
    policy = load_expert(expert, "ant", observation_dim=29, action_dim=8)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{task}.hdf5"
    kwargs = {"task": task, "policy": policy, "horizon": horizon, "noise": noise}
    episodes, seconds = common.collect(
        D4RLAntmazeEpisodes, kwargs, num_episodes, seed, workers, f"generating {task}", progress
    )
    arrays = datafiles.concatenate(episodes)
    success = float(np.mean([e["terminals"].any() for e in episodes]))
    flipped = float(np.mean([upside_down(e["infos/qpos"][-1]) for e in episodes]))
    starts, goals = start_and_goal_cells(task)
    info = {
        "provenance": "generated",
        "generator": "fidec-gym envs.locomotion.d4rl_antmaze (Minari's D4RL antmaze protocol, self-trained expert)",
        "generator_version": common.GENERATOR_VERSION,
        "versions": common.versions(),
        "dataset": task,
        "frame": "d4rl",
        "expert": policy.summary(),
        "seed": seed,
        "num_episodes": num_episodes,
        "horizon": horizon,
        "noise": noise,
        "start_cells": [list(c) for c in starts],
        "goal_cells": [list(c) for c in goals],
        "workers": workers,
        "seconds": round(seconds, 3),
        "rows": int(len(arrays["rewards"])),
        "rows_per_second": round(len(arrays["rewards"]) / seconds, 1) if seconds > 0 else None,
        "episodes_reaching_goal": round(success, 4),
        "episodes_ending_upside_down": round(flipped, 4),
        "files": {path.name: {"episodes": num_episodes}},
    }
    temporaries = {path: datafiles.write_hdf5(arrays, out, {"provenance": "generated", "dataset": task})}
    datafiles.publish(temporaries, out / f"{task}.meta.json", info)
    return path
