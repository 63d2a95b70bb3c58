"""Regenerate OGBench manipulation "play" datasets locally with the plan oracles shipped in the ogbench package.

The recipe is OGBench's (docs/datasets.md §2.1): the goal-conditioned environment in data-collection mode without
termination at the goal, 1001-step episodes, the non-Markovian plan oracles (cube, button, drawer, window; puzzle
presses buttons with the gripper closed), a new random target whenever the oracle's plan is finished, and the scene
health check. Two things are added: every episode is seeded from ``SeedSequence(seed, spawn_key=(episode,))`` (the
oracles draw from NumPy's global generator, the environment from its own), so the data does not depend on the number
of worker processes; and files are written atomically with a ``<dataset>.meta.json`` sidecar that marks them as
generated. The output has the official npz layout and loads through the same path as an official file.
"""

from __future__ import annotations

import importlib.metadata
import multiprocessing
import os
import time
import warnings
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from fidec_gym.envs import datafiles
from fidec_gym.errors import ConfigError

GENERATOR_VERSION = "1.0"
DEFAULT_MAX_EPISODE_STEPS = 1001
GENERATABLE_BASES = ("cube-", "scene", "puzzle-")


def parse_play_dataset(name: str, visual: bool = False) -> tuple[str, str, bool]:
    """``(dataset file stem, OGBench environment ID, visual)`` for a name like ``cube-single-play`` or
    ``visual-scene-play-v0``. Only manipulation "play" data comes from here (locomotion: envs/locomotion)."""
    stem = name.strip()
    stem = stem[: -len("-v0")] if stem.endswith("-v0") else stem
    if stem.startswith("visual-"):
        visual, stem = True, stem[len("visual-") :]
    words = stem.split("-")
    if len(words) < 2 or not stem.startswith(GENERATABLE_BASES):
        if "navigate" in words or stem.startswith(("antmaze", "humanoidmaze", "antsoccer", "pointmaze")):
            raise ConfigError(
                f"{name!r} is locomotion data, which an expert policy makes rather than the manipulation oracles: "
                f"`fidec data generate {stem}` (navigate mazes and D4RL antmaze; docs/datasets.md §2.3), or fetch "
                "the official files with `fidec data download` (needs network)."
            )
        raise ConfigError(
            f"{name!r} is not a manipulation dataset; use one of cube-single-play, cube-double-play, scene-play, "
            "puzzle-3x3-play, puzzle-4x4-play (optionally with a visual- prefix)"
        )
    if words[-1] != "play":
        raise ConfigError(
            f"{name!r}: only 'play' datasets are generated (plan oracles); got dataset type {words[-1]!r}"
        )
    base = "-".join(words[:-1])
    prefix = "visual-" if visual else ""
    return f"{prefix}{base}-play-v0", f"{prefix}{base}-v0", visual


def _make_oracles(env_name: str, env, noise: float, noise_smoothing: float) -> dict:
    from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
    from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
    from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
    from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

    kwargs = dict(env=env, noise=noise, noise_smoothing=noise_smoothing)
    if "cube" in env_name:
        return {"cube": CubePlanOracle(**kwargs)}
    if "scene" in env_name:
        return {
            "cube": CubePlanOracle(**kwargs),
            "button": ButtonPlanOracle(**kwargs),
            "drawer": DrawerPlanOracle(**kwargs),
            "window": WindowPlanOracle(**kwargs),
        }
    # Puzzles are solved by pressing buttons; the closed gripper makes the presses reliable.
    return {"button": ButtonPlanOracle(gripper_always_closed=True, **kwargs)}


def _stacking_probability(env_name: str) -> float:
    """Per-episode chance that a new cube target is on top of another cube (OGBench's values per cube count)."""
    ranges = {
        "single": None,
        "double": (0.0, 0.25),
        "triple": (0.05, 0.35),
        "quadruple": (0.1, 0.5),
        "octuple": (0.0, 0.35),
    }
    for word, bounds in ranges.items():
        if word in env_name:
            return 0.0 if bounds is None else float(np.random.uniform(*bounds))
    return 0.5


def scene_episode_is_healthy(qpos: np.ndarray) -> bool:
    """The cube must stay visible: not too far right, and not too far left unless it rests in the drawer."""
    block_xyz = qpos[:, 14:17]
    too_far_right = (block_xyz[:, 1] >= 0.29).any()
    outside_drawer = (block_xyz[:, 2] < 0.06) | (block_xyz[:, 2] > 0.08)
    too_far_left = ((block_xyz[:, 1] <= -0.3) & outside_drawer).any()
    return not (too_far_right or too_far_left)


class EpisodeGenerator:
    """One data-collection environment with its oracles; produces whole seeded episodes."""

    def __init__(
        self,
        env_name: str,
        max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS,
        noise: float = 0.1,
        noise_smoothing: float = 0.5,
    ):
        import gymnasium
        import ogbench.manipspace  # noqa: F401  (registers the manipulation environments)

        self.env_name = env_name
        with warnings.catch_warnings():
            # Gymnasium notes that the float64 Box bounds are cast to float32: harmless (docs/datasets.md §1.2).
            warnings.filterwarnings("ignore", message=".*precision lowered by casting to float32.*")
            self.env = gymnasium.make(
                env_name, terminate_at_goal=False, mode="data_collection", max_episode_steps=max_episode_steps
            )
        self.oracles = _make_oracles(env_name, self.env, noise, noise_smoothing)
        self.has_buttons = hasattr(self.env.unwrapped, "_cur_button_states")
        self.unhealthy_episodes = 0

    def episode(self, seed: int, index: int) -> dict[str, np.ndarray]:
        sequence = np.random.SeedSequence(seed, spawn_key=(index,))
        env_sequence, oracle_sequence = sequence.spawn(2)
        np.random.seed(oracle_sequence.generate_state(4))
        reset_seed: Optional[int] = int(env_sequence.generate_state(1)[0])
        while True:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*precision lowered by casting to float32.*")
                data = self._rollout(reset_seed)
            reset_seed = None  # a retry continues the environment's generator, which stays deterministic
            if "scene" not in self.env_name or scene_episode_is_healthy(data["qpos"]):
                return data
            self.unhealthy_episodes += 1

    def _rollout(self, reset_seed: Optional[int]) -> dict[str, np.ndarray]:
        ob, info = self.env.reset(seed=reset_seed)
        p_stack = _stacking_probability(self.env_name)
        oracle = self.oracles[info["privileged/target_task"]]
        oracle.reset(ob, info)
        rows: dict[str, list] = {"observations": [], "actions": [], "terminals": [], "qpos": [], "qvel": []}
        if self.has_buttons:
            rows["button_states"] = []
        done = False
        while not done:
            action = np.clip(np.asarray(oracle.select_action(ob, info)), -1.0, 1.0)
            next_ob, _, terminated, truncated, info = self.env.step(action)
            done = terminated or truncated
            if oracle.done:
                # Chain sub-tasks: a finished plan gets a fresh target within the same episode.
                oracle_ob, oracle_info = self.env.unwrapped.set_new_target(p_stack=p_stack)  # type: ignore[attr-defined]
                oracle = self.oracles[oracle_info["privileged/target_task"]]
                oracle.reset(oracle_ob, oracle_info)
            # Each stored row is the state *before* the action, with that state's physics (prev_qpos).
            rows["observations"].append(ob)
            rows["actions"].append(action)
            rows["terminals"].append(done)
            rows["qpos"].append(info["prev_qpos"])
            rows["qvel"].append(info["prev_qvel"])
            if self.has_buttons:
                rows["button_states"].append(info["prev_button_states"])
            ob = next_ob
        pixels = np.asarray(rows["observations"][0]).dtype == np.uint8
        dtypes = {"observations": np.uint8 if pixels else np.float32, "terminals": bool, "button_states": np.int64}
        return {key: np.asarray(values, dtype=dtypes.get(key, np.float32)) for key, values in rows.items()}

    def close(self) -> None:
        self.env.close()


# -- worker processes ---------------------------------------------------------------------------------------------
_worker_generator: Optional[EpisodeGenerator] = None


def _init_worker(env_name: str, max_episode_steps: int, noise: float, noise_smoothing: float) -> None:
    global _worker_generator
    from fidec_gym.processes import worker_setup

    # The parent handles Ctrl-C and SIGTERM and terminates the pool; workers must not print their own tracebacks,
    # and a worker whose parent died (kill -9) exits at once instead of generating on as an orphan.
    worker_setup(graceful=False)
    _worker_generator = EpisodeGenerator(env_name, max_episode_steps, noise, noise_smoothing)


def _worker_episode(task: tuple[int, int]) -> dict[str, np.ndarray]:
    seed, index = task
    assert _worker_generator is not None, "set by the pool's initializer"
    return _worker_generator.episode(seed, index)


def _episodes(
    env_name: str, total: int, seed: int, workers: int, max_episode_steps: int, noise: float, noise_smoothing: float
) -> Iterator[dict[str, np.ndarray]]:
    """Episodes 0 .. total-1 in order, from this process or from a pool of workers."""
    if workers == 1:
        generator = EpisodeGenerator(env_name, max_episode_steps, noise, noise_smoothing)
        try:
            for index in range(total):
                yield generator.episode(seed, index)
        finally:
            generator.close()
        return
    # "spawn" keeps workers independent of whatever the parent has imported (JAX threads, GL contexts).
    context = multiprocessing.get_context("spawn")
    pool = context.Pool(
        workers, initializer=_init_worker, initargs=(env_name, max_episode_steps, noise, noise_smoothing)
    )
    try:
        yield from pool.imap(_worker_episode, [(seed, index) for index in range(total)], chunksize=1)
    except BaseException:  # Ctrl-C, a failing episode, or the consumer stopping early: stop the workers now
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        pool.join()


# -- writing ------------------------------------------------------------------------------------------------------
def generate_manipulation_dataset(
    name: str,
    num_episodes: int,
    out_dir: os.PathLike | str,
    workers: int = 1,
    seed: int = 0,
    visual: bool = False,
    progress: bool = True,
    max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS,
    noise: float = 0.1,
    noise_smoothing: float = 0.5,
) -> tuple[Path, Path]:
    """Generate ``<dataset>.npz`` (``num_episodes`` episodes) and ``<dataset>-val.npz`` (``num_episodes // 10``,
    at least one) in ``out_dir`` with OGBench's plan oracles, plus the ``<dataset>.meta.json`` sidecar.

    Args:
        name: e.g. ``"cube-single-play"``, ``"scene-play-v0"``, ``"visual-puzzle-3x3-play"``.
        num_episodes: training episodes (OGBench uses 1000 for these datasets).
        out_dir: output directory (created if needed).
        workers: processes generating whole episodes in parallel; the data does not depend on it.
        seed: root seed; episode i uses ``SeedSequence(seed, spawn_key=(i,))``.
        visual: pixel observations (64x64x3 uint8; slow on CPU: about 0.3 s per step).
        progress: show a tqdm progress bar.
        max_episode_steps: rows per episode (1001 in OGBench; smaller values make quick test data).
        noise, noise_smoothing: the plan oracles' temporally correlated noise (OGBench defaults).

    Returns:
        ``(train_path, val_path)``. Nothing is written unless both files are complete.
    """
    from tqdm import tqdm

    if num_episodes < 1 or workers < 1 or max_episode_steps < 2:
        raise ConfigError(
            f"need num_episodes >= 1, workers >= 1 and max_episode_steps >= 2 "
            f"(got {num_episodes}, {workers}, {max_episode_steps})"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:  # numpy's SeedSequence takes no other
        raise ConfigError(f"seed must be a whole number >= 0, got {seed!r}")
    dataset, env_name, visual = parse_play_dataset(name, visual)
    import gymnasium
    import ogbench.manipspace  # noqa: F401

    if env_name not in gymnasium.registry:
        raise ConfigError(f"{name!r}: OGBench has no environment {env_name!r} to generate it from")
    num_val_episodes = max(1, num_episodes // 10)
    total = num_episodes + num_val_episodes
    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    train_path, val_path = out_dir / f"{dataset}.npz", out_dir / f"{dataset}-val.npz"
    sidecar = out_dir / f"{dataset}.meta.json"

    from fidec_gym.processes import stop_on_signals

    started = time.perf_counter()
    episodes = []
    # SIGTERM stops generation as Ctrl-C does: the pool is terminated and nothing is written.
    bar = tqdm(total=total, desc=f"generating {dataset}", unit="episode", disable=not progress)
    with stop_on_signals(), bar:
        for episode in _episodes(env_name, total, seed, min(workers, total), max_episode_steps, noise, noise_smoothing):
            episodes.append(episode)
            bar.update(1)
    elapsed = time.perf_counter() - started

    temporaries = {}
    try:
        temporaries[train_path] = datafiles.write_npz(datafiles.concatenate(episodes[:num_episodes]), out_dir)
        temporaries[val_path] = datafiles.write_npz(datafiles.concatenate(episodes[num_episodes:]), out_dir)
    except BaseException:
        for temporary in temporaries.values():
            temporary.unlink(missing_ok=True)
        raise
    info = {
        "provenance": "generated",
        "generator": "fidec-gym envs.generate (OGBench plan oracles)",
        "generator_version": GENERATOR_VERSION,
        "ogbench_version": importlib.metadata.version("ogbench"),
        "dataset": dataset,
        "env_name": env_name,
        "dataset_type": "play",
        "seed": seed,
        "num_episodes": num_episodes,
        "num_val_episodes": num_val_episodes,
        "max_episode_steps": max_episode_steps,
        "noise": noise,
        "noise_smoothing": noise_smoothing,
        "workers": workers,
        "seconds": round(elapsed, 3),
        "files": {train_path.name: {"episodes": num_episodes}, val_path.name: {"episodes": num_val_episodes}},
    }
    datafiles.publish(temporaries, sidecar, info)
    return train_path, val_path
