"""What the locomotion generators share: per-episode seeding, a worker pool over whole episodes, atomic writing of
data files next to a ``<dataset>.meta.json`` sidecar (the same contract as ``envs.generate``)."""

from __future__ import annotations

import importlib
import importlib.metadata
import multiprocessing
import platform
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from fidec_gym.errors import ConfigError, DataNotFoundError

GENERATOR_VERSION = "1.0"


class EpisodeSeeds:
    """Independent streams for one episode, from ``SeedSequence(seed, spawn_key=(index,))``: the environment's reset
    seed, a seed for NumPy's global generator (which OGBench's environments draw from), a seed for the action
    space, and a Generator for the generator's own draws (cells, goals, action noise)."""

    def __init__(self, seed: int, index: int):
        sequence = np.random.SeedSequence(seed, spawn_key=(index,))
        env_sequence, global_sequence, space_sequence, own_sequence = sequence.spawn(4)
        self.reset_seed = int(env_sequence.generate_state(1)[0])
        self.global_state = global_sequence.generate_state(4)
        self.space_seed = int(space_sequence.generate_state(1)[0])
        self.rng = np.random.default_rng(own_sequence)

    def seed_globals(self, env=None) -> None:
        np.random.seed(self.global_state)
        if env is not None:
            env.unwrapped.action_space.seed(self.space_seed)


# -- worker processes ---------------------------------------------------------------------------------------------
_worker: Any = None


def _init_worker(module: str, name: str, kwargs: dict) -> None:
    global _worker
    from fidec_gym.processes import worker_setup

    # The parent handles Ctrl-C (and SIGTERM) and terminates the pool; a worker whose parent died exits at once.
    worker_setup(graceful=False)
    _worker = getattr(importlib.import_module(module), name)(**kwargs)


def _worker_episode(task: tuple[int, int]) -> dict[str, np.ndarray]:
    seed, index = task
    return _worker.episode(seed, index)


def run_episodes(factory: Callable, kwargs: dict, total: int, seed: int, workers: int) -> Iterator[dict]:
    """Episodes 0 .. total-1 in order, made by ``factory(**kwargs).episode(seed, index)`` in this process or in a pool
    of ``workers`` spawned processes (the data does not depend on the number)."""
    if workers <= 1:
        generator = factory(**kwargs)
        try:
            for index in range(total):
                yield generator.episode(seed, index)
        finally:
            generator.close()
        return
    context = multiprocessing.get_context("spawn")
    pool = context.Pool(workers, initializer=_init_worker, initargs=(factory.__module__, factory.__qualname__, kwargs))
    try:
        yield from pool.imap(_worker_episode, [(seed, index) for index in range(total)], chunksize=1)
    except BaseException:
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        pool.join()


def collect(
    factory: Callable, kwargs: dict, total: int, seed: int, workers: int, desc: str, progress: bool
) -> tuple[list[dict], float]:
    from tqdm import tqdm

    started = time.perf_counter()
    episodes = []
    with tqdm(total=total, desc=desc, unit="episode", disable=not progress) as bar:
        for episode in run_episodes(factory, kwargs, total, seed, min(workers, total)):
            episodes.append(episode)
            bar.update(1)
    return episodes, time.perf_counter() - started


def check_counts(num_episodes: int, workers: int, max_episode_steps: int) -> None:
    if num_episodes < 1 or workers < 1 or max_episode_steps < 2:
        raise ConfigError(
            f"need episodes >= 1, workers >= 1 and max_episode_steps >= 2 "
            f"(got {num_episodes}, {workers}, {max_episode_steps})"
        )


def check_training_settings(
    steps: int,
    eval_every: int,
    eval_episodes: int,
    checkpoint_every: int,
    threads: int,
    learning_starts: Optional[int],
    max_episode_steps: Optional[int],
    seed: int = 0,
    out=None,
) -> None:
    """The settings of ``expert_training.train_expert``, checked before stable-baselines3 is imported."""
    if steps < 2 or eval_every < 1 or eval_episodes < 0 or checkpoint_every < 1 or threads < 1:
        raise ConfigError(
            f"need steps >= 2, eval_every >= 1, eval_episodes >= 0, checkpoint_every >= 1 and threads >= 1 "
            f"(got {steps}, {eval_every}, {eval_episodes}, {checkpoint_every}, {threads})"
        )
    if learning_starts is not None and learning_starts < 0:
        raise ConfigError(f"learning_starts (--learning-starts) must be >= 0, got {learning_starts}")
    if max_episode_steps is not None and max_episode_steps < 1:
        raise ConfigError(f"max_episode_steps (--max-episode-steps) must be >= 1, got {max_episode_steps}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    if out is not None and Path(out).expanduser().exists() and not Path(out).expanduser().is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory; pass the run directory to write to")


def check_directories(paths, flag: str, what: str) -> None:
    """Every one of ``paths`` (given with ``flag``) is an existing directory."""
    for path in paths:
        if not Path(path).expanduser().is_dir():
            problem = "is a file, not a directory" if Path(path).expanduser().exists() else "does not exist"
            raise DataNotFoundError(f"{flag} {path} {problem}; pass {what}")


def check_seed_and_noise(seed: int, noise: float) -> None:
    """The root seed is a whole number >= 0 (numpy's SeedSequence takes no other) and the action noise a finite
    number >= 0."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a whole number >= 0, got {seed!r}")
    if not isinstance(noise, (int, float, np.number)) or not np.isfinite(noise) or noise < 0:
        raise ConfigError(f"noise must be a finite number >= 0 (0: the expert alone), got {noise!r}")


def library_versions() -> dict[str, Optional[str]]:
    """Python and the packages an expert's training depends on (recorded with every training session)."""
    versions: dict[str, Optional[str]] = {"python": platform.python_version()}
    for package in ("stable-baselines3", "torch", "gymnasium", "mujoco", "ogbench", "numpy", "fidec-gym"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def versions() -> dict[str, Optional[str]]:
    out: dict[str, Optional[str]] = {}
    for package in ("ogbench", "gymnasium", "gymnasium-robotics", "mujoco", "numpy", "stable-baselines3"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = None
    return out
