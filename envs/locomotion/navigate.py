"""OGBench ``<maze>-navigate`` datasets made here with a self-trained expert (docs/datasets.md §2.3).

OGBench's navigate protocol: the goal-conditioned maze environment without termination at the goal, episodes of
H + 1 rows (1001; 2001 for giant and humanoid mazes), the start cell drawn from all free cells and the goal from the
"vertex" cells (not straight corridors), OGBench's BFS subgoal oracle (the neighbouring cell closer to the goal), the
expert fed the robot state without xy plus the unit direction to the subgoal, Gaussian action noise 0.2, and a new
vertex goal whenever the current one is reached. Per-episode seeding (``common.EpisodeSeeds``) makes the data
independent of the number of workers. The files have OGBench's npz layout; the sidecar marks them ``generated``.
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
from .experts import ExpertPolicy, load_expert, train_command
from .mazes import free_cells, oracle_subgoal_cell, unit, upside_down, vertex_cells

# dataset base -> (OGBench environment, expert, default episodes, default rows per episode); from OGBench's commands.
NAVIGATE_DATASETS = {
    "antmaze-medium-navigate": ("antmaze-medium-v0", "ant", 1000, 1001),
    "antmaze-large-navigate": ("antmaze-large-v0", "ant", 1000, 1001),
    "antmaze-giant-navigate": ("antmaze-giant-v0", "ant", 500, 2001),
    "antmaze-teleport-navigate": ("antmaze-teleport-v0", "ant", 1000, 1001),
    "humanoidmaze-medium-navigate": ("humanoidmaze-medium-v0", "humanoid", 1000, 2001),
    "humanoidmaze-large-navigate": ("humanoidmaze-large-v0", "humanoid", 1000, 2001),
    "humanoidmaze-giant-navigate": ("humanoidmaze-giant-v0", "humanoid", 500, 4001),
}
DEFAULT_NOISE = 0.2


def parse_navigate_dataset(name: str) -> Optional[str]:
    """The base name (``antmaze-large-navigate``) of a navigate dataset name, or None if ``name`` is not one."""
    stem = name.strip()
    stem = stem[len("fidec/") :] if stem.startswith("fidec/") else stem
    stem = stem[: -len("-v0")] if stem.endswith("-v0") else stem
    return stem if stem in NAVIGATE_DATASETS else None


def _make_maze_env(env_name: str, max_episode_steps: int):
    import gymnasium
    import ogbench.locomaze  # noqa: F401  (registers the maze environments)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*precision lowered by casting to float32.*")
        return gymnasium.make(env_name, terminate_at_goal=False, max_episode_steps=max_episode_steps)


class NavigateEpisodes:
    """One maze environment driven by the expert and the BFS subgoal oracle; produces whole seeded episodes."""

    def __init__(
        self, env_name: str, policy: ExpertPolicy, max_episode_steps: int = 1001, noise: float = DEFAULT_NOISE
    ):
        self.env = _make_maze_env(env_name, max_episode_steps)
        self.maze = self.env.unwrapped
        self.maze_map = np.asarray(self.maze.maze_map)
        self.all_cells = free_cells(self.maze_map)
        self.goal_cells = vertex_cells(self.maze_map)
        self.policy = policy
        self.noise = float(noise)

    def expert_observation(self, state: np.ndarray) -> np.ndarray:
        xy = self.maze.get_xy()
        goal_ij = self.maze.xy_to_ij(self.maze.cur_goal_xy)
        subgoal = oracle_subgoal_cell(self.maze_map, self.maze.xy_to_ij(xy), goal_ij)
        direction = unit(np.asarray(self.maze.ij_to_xy(subgoal)) - xy)
        return np.concatenate([state[2:], direction])

    def episode(self, seed: int, index: int) -> dict[str, np.ndarray]:
        seeds = common.EpisodeSeeds(seed, index)
        seeds.seed_globals(self.env)
        rng = seeds.rng
        init_ij = self.all_cells[rng.integers(len(self.all_cells))]
        goal_ij = self.goal_cells[rng.integers(len(self.goal_cells))]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*precision lowered by casting to float32.*")
            ob, _ = self.env.reset(
                seed=seeds.reset_seed, options={"task_info": {"init_ij": init_ij, "goal_ij": goal_ij}}
            )
            rows: dict[str, list] = {"observations": [], "actions": [], "terminals": [], "qpos": [], "qvel": []}
            goals_reached = 0
            done = False
            while not done:
                state = self.maze.get_ob(ob_type="states")
                action = self.policy(self.expert_observation(state))
                action = np.clip(action + rng.normal(0.0, self.noise, action.shape), -1.0, 1.0)
                next_ob, _, terminated, truncated, info = self.env.step(action)
                done = bool(terminated or truncated)
                if info["success"]:
                    goals_reached += 1
                    goal_ij = self.goal_cells[rng.integers(len(self.goal_cells))]
                    self.maze.set_goal(goal_ij)
                # Each stored row is the state before the action, with that state's physics.
                rows["observations"].append(ob)
                rows["actions"].append(action)
                rows["terminals"].append(done)
                rows["qpos"].append(info["prev_qpos"])
                rows["qvel"].append(info["prev_qvel"])
                ob = next_ob
        data = {
            key: np.asarray(values, dtype=bool if key == "terminals" else np.float32) for key, values in rows.items()
        }
        data["_goals_reached"] = np.asarray([goals_reached])
        data["_upside_down"] = np.asarray([upside_down(self.maze.data.qpos)])
        return data

    def close(self) -> None:
        self.env.close()


def cell_coverage(qpos: np.ndarray, maze_name: str) -> dict:
    """How many free cells of the maze the xy positions in ``qpos`` visit (and which are missed)."""
    env = _make_maze_env(maze_name, 10)
    maze = env.unwrapped
    cells = free_cells(np.asarray(maze.maze_map))
    xy = np.asarray(qpos)[:, :2]
    maze_unit = maze._maze_unit
    i = np.floor((xy[:, 1] + maze._offset_y + 0.5 * maze_unit) / maze_unit).astype(int)
    j = np.floor((xy[:, 0] + maze._offset_x + 0.5 * maze_unit) / maze_unit).astype(int)
    visited = set(zip(i.tolist(), j.tolist()))
    counts = {cell: int(((i == cell[0]) & (j == cell[1])).sum()) for cell in cells}
    env.close()
    return {
        "free_cells": len(cells),
        "visited_cells": sum(1 for c in cells if c in visited),
        "missed_cells": [list(c) for c in cells if c not in visited],
        "min_rows_per_cell": min(counts.values()),
        "rows_outside_free_cells": int(len(xy) - sum(counts.values())),
    }


def generate_navigate_dataset(
    name: str,
    num_episodes: Optional[int],
    out_dir: os.PathLike | str,
    workers: int = 1,
    seed: int = 0,
    expert: Optional[str | os.PathLike] = None,
    noise: float = DEFAULT_NOISE,
    progress: bool = True,
    max_episode_steps: Optional[int] = None,
) -> tuple[Path, Path]:
    """Write ``<base>-v0.npz`` (``num_episodes``), ``<base>-v0-val.npz`` (``num_episodes // 10``, at least one) and
    ``<base>-v0.meta.json`` into ``out_dir``. ``expert``: a zip or directory (default: the shipped expert, then the
    user directory's). Returns ``(train_path, val_path)``; nothing is written unless everything is complete."""
    base = parse_navigate_dataset(name)
    if base is None:
        raise ConfigError(f"{name!r} is not a locomotion navigate dataset; valid: {', '.join(NAVIGATE_DATASETS)}")
    env_name, expert_name, default_episodes, default_steps = NAVIGATE_DATASETS[base]
    num_episodes = default_episodes if num_episodes is None else int(num_episodes)
    max_episode_steps = default_steps if max_episode_steps is None else int(max_episode_steps)
    common.check_counts(num_episodes, workers, max_episode_steps)
    common.check_seed_and_noise(seed, noise)
    import gymnasium
    import ogbench.locomaze  # noqa: F401

    if env_name not in gymnasium.registry:
        raise ConfigError(f"{name!r}: the installed ogbench has no environment {env_name!r}; upgrade ogbench")
    probe = _make_maze_env(env_name, 10)
    state_dim = int(probe.unwrapped.get_ob(ob_type="states").shape[0])
    action_dim = int(np.prod(probe.action_space.shape))
    probe.close()
    # The expert sees the state without xy plus a 2-d direction: as many inputs as the state has entries.
    policy = load_expert(expert, expert_name, observation_dim=state_dim, action_dim=action_dim)

    num_val = max(1, num_episodes // 10)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    dataset = f"{base}-v0"
    train_path, val_path = out / f"{dataset}.npz", out / f"{dataset}-val.npz"
    kwargs = {"env_name": env_name, "policy": policy, "max_episode_steps": max_episode_steps, "noise": noise}
    episodes, seconds = common.collect(
        NavigateEpisodes, kwargs, num_episodes + num_val, seed, workers, f"generating {dataset}", progress
    )
    goals = [int(e.pop("_goals_reached")[0]) for e in episodes]
    flipped = [bool(e.pop("_upside_down")[0]) for e in episodes]
    temporaries = {}
    try:
        temporaries[train_path] = datafiles.write_npz(datafiles.concatenate(episodes[:num_episodes]), out)
        temporaries[val_path] = datafiles.write_npz(datafiles.concatenate(episodes[num_episodes:]), out)
    except BaseException:
        for tmp in temporaries.values():
            tmp.unlink(missing_ok=True)
        raise
    rows = sum(len(e["terminals"]) for e in episodes)
    info = {
        "provenance": "generated",
        "generator": "fidec-gym envs.locomotion.navigate (OGBench navigate protocol, self-trained expert)",
        "generator_version": common.GENERATOR_VERSION,
        "ogbench_version": common.versions()["ogbench"],
        "versions": common.versions(),
        "dataset": dataset,
        "env_name": env_name,
        "dataset_type": "navigate",
        "expert": policy.summary(),
        "seed": seed,
        "num_episodes": num_episodes,
        "num_val_episodes": num_val,
        "max_episode_steps": max_episode_steps,
        "noise": noise,
        "workers": workers,
        "seconds": round(seconds, 3),
        "rows": rows,
        "rows_per_second": round(rows / seconds, 1) if seconds > 0 else None,
        "goals_reached_per_episode": round(float(np.mean(goals)), 3),
        "episodes_ending_upside_down": round(float(np.mean(flipped)), 4),
        "files": {train_path.name: {"episodes": num_episodes}, val_path.name: {"episodes": num_val}},
    }
    datafiles.publish(temporaries, out / f"{dataset}.meta.json", info)
    return train_path, val_path


def missing_expert_hint(name: str) -> str:
    base = parse_navigate_dataset(name) or name
    return train_command(NAVIGATE_DATASETS.get(base, (None, "ant"))[1])
