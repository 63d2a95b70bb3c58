"""Policy evaluation in Gymnasium vector environments.

Episodes are split into a fixed quota per sub-environment, decided before the first step: sub-environment ``i``
runs exactly ``quota[i]`` episodes and is ignored afterwards (it keeps auto-resetting, but nothing it does is
counted). Without the quota, sub-environments with short episodes would finish more episodes and bias the mean
towards them. Each vector step makes one batched ``sample_actions`` call for all sub-environments.

The vector env uses ``AutoresetMode.SAME_STEP``: the step that ends an episode returns the episode's final info
under ``infos["final_info"]`` and already the reset observation, so no action is ever spent on a reset.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from fidec_gym.envs.catalogue import TaskSpec, task_info
from fidec_gym.errors import ConfigError

Policy = Callable[[np.ndarray], np.ndarray]


EVALUATION_INFO_KEYS = ("success", "episode", "episode_end")


class EvaluationInfo(gym.Wrapper):
    """Keep only the info keys evaluation reads. OGBench infos carry the full physics state every step; shipping
    it from each worker and merging it across sub-envs costs more than the environment step on a small machine."""

    def reset(self, **kwargs):
        observation, info = self.env.reset(**kwargs)
        return observation, self._keep(info)

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        return observation, reward, terminated, truncated, self._keep(info)

    @staticmethod
    def _keep(info: dict) -> dict:
        return {key: info[key] for key in EVALUATION_INFO_KEYS if key in info}


def _make_env(env_id: str, env_kwargs: dict) -> gym.Env:
    # Runs inside worker processes too, where the fidec IDs must be registered first.
    from fidec_gym.envs.registration import register_all

    register_all()
    return EvaluationInfo(gym.make(env_id, **env_kwargs))


def _quiet_async_worker(*args: Any) -> None:
    """Gymnasium's sub-environment worker, quiet on the way out. Ctrl-C is left to the parent (a Ctrl-C at the
    terminal reaches every process of the group; the parent closes the environments), the worker ends when its
    parent dies (even by ``kill -9``), and a parent that is gone ends it without a BrokenPipe traceback."""
    from gymnasium.vector.async_vector_env import _async_worker

    from fidec_gym.processes import worker_setup

    worker_setup(graceful=False)
    try:
        _async_worker(*args)
    except (BrokenPipeError, EOFError, ConnectionError):
        pass  # the parent closed its end or died


def _task_spec(env: str | Callable) -> TaskSpec | None:
    if not isinstance(env, str):
        return None
    try:
        return task_info(env)
    except KeyError:
        return None


def default_num_workers(env: str | Callable, num_episodes: int) -> int:
    """One worker per core, never more than episodes; toy bandits step in microseconds, so one worker."""
    spec = _task_spec(env)
    if spec is not None and spec.suite == "toy":
        return 1
    return max(1, min(os.cpu_count() or 1, num_episodes))


# Sub-environments of a one-process evaluation: its episodes step side by side, so the policy is called once per step
# for all of them; the bound keeps the memory of many MuJoCo models small.
SYNC_ENVS_MAX = 32


def evaluation_layout(
    env: str | Callable, num_episodes: int, num_workers: int | None = None, seeds: int = 1
) -> tuple[int, str | None]:
    """(sub-environments per seed, vectorization) of an evaluation of ``num_episodes`` per seed.

    One process (``num_workers`` 1, a toy task, or a one-core machine): up to :data:`SYNC_ENVS_MAX` sub-environments
    in it ("sync"), instead of one sub-environment that plays every episode in turn with a policy call per step.
    Several processes: one sub-environment each ("async"), ``num_workers`` per seed or the cores shared over seeds.
    """
    default = default_num_workers(env, num_episodes)
    if (num_workers or default) == 1:
        return max(1, min(num_episodes, SYNC_ENVS_MAX)), "sync"
    per_seed = num_workers or -(-default // seeds)
    return max(1, min(per_seed, num_episodes)), None


def check_evaluation_settings(
    num_episodes: int,
    num_workers: int | None = None,
    temperature: float = 0.0,
    video_episodes: int = 0,
    frame_skip: int = 1,
) -> None:
    """The settings of :func:`evaluate`, checked before a checkpoint is loaded or a worker started."""
    from fidec_gym.eval.run.video import whole_number

    whole_number("num_episodes (--episodes)", num_episodes, 1)
    if num_workers is not None:
        whole_number("num_workers (--workers)", num_workers, 1)
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, numbers.Real)
        or not math.isfinite(temperature)
        or temperature < 0
    ):
        raise ConfigError(f"temperature (--temperature) must be a finite number >= 0, got {temperature!r}")
    whole_number("video_episodes (--videos)", video_episodes, 0)
    whole_number("frame_skip (--frame-skip)", frame_skip, 1)


def make_policy(agent: Any, seed: int, temperature: float = 0.0) -> Policy:
    """A numpy policy from an agent with ``sample_actions(observations, seed, temperature)``.

    Each call draws a fresh JAX key from a chain seeded with ``seed``, so a roll-out is reproducible. Actions are
    clipped to [-1, 1]. A plain callable ``observations -> actions`` is returned unchanged (clipped).
    """
    if not hasattr(agent, "sample_actions"):
        if not callable(agent):
            raise TypeError(f"expected an agent with sample_actions() or a callable policy, got {type(agent)}")
        return lambda observations: np.clip(np.asarray(agent(observations)), -1.0, 1.0)

    import jax

    key = jax.random.PRNGKey(seed)
    split = _key_splitter()

    def policy(observations: np.ndarray) -> np.ndarray:
        nonlocal key
        key, action_key = split(key)
        actions = agent.sample_actions(observations, seed=action_key, temperature=temperature)
        return np.clip(np.asarray(actions), -1.0, 1.0)

    return policy


@functools.cache
def _key_splitter():
    """``key -> (next key, action key)`` compiled: one dispatch per policy call instead of a split and two slices."""
    import jax

    return jax.jit(lambda key: tuple(jax.random.split(key)))


def episode_quotas(num_episodes: int, num_envs: int) -> np.ndarray:
    """Split ``num_episodes`` over ``num_envs`` sub-environments as evenly as possible (earlier ones get the rest)."""
    base, rest = divmod(num_episodes, num_envs)
    return np.array([base + (1 if i < rest else 0) for i in range(num_envs)], dtype=np.int64)


def _info_value(infos: dict, path: tuple[str, ...], index: int | np.integer) -> Any:
    """Value of sub-env ``index`` at nested key ``path`` of vector infos, or None where that env has none."""
    node = infos
    for key in path:
        mask = node.get(f"_{key}")
        if key not in node or mask is None or not mask[index]:
            return None
        node = node[key]
    return node[index]


class Evaluator:
    """A reusable vector environment that evaluates policies with a fixed episode quota per sub-environment.

    Args:
        env: a task ID (``fidec/...``) or a picklable zero-argument factory returning a ``gym.Env``.
        num_envs: sub-environments (default: one per core, see :func:`default_num_workers`).
        vectorization: ``"async"`` (one process per sub-env; default when ``num_envs > 1``) or ``"sync"``.
        env_kwargs: keyword arguments of ``gym.make`` (ignored for a factory).
        context: multiprocessing start method of the async workers. ``spawn`` keeps JAX's threads out of the
            workers (forking a process that runs JAX can deadlock).
    """

    def __init__(
        self,
        env: str | Callable[[], gym.Env],
        num_envs: int | None = None,
        vectorization: str | None = None,
        env_kwargs: dict | None = None,
        context: str = "spawn",
    ):
        if isinstance(env, str):
            task_info(env)  # unknown ID -> error with close-name suggestions, before any process starts
            factory: Callable[[], gym.Env] = functools.partial(_make_env, env, dict(env_kwargs or {}))
        elif callable(env):
            factory = env
        else:
            raise TypeError(f"env must be a task ID or an environment factory, got {env!r}")
        self.env_id = env if isinstance(env, str) else getattr(env, "__name__", repr(env))
        self.spec = _task_spec(env)
        self.num_envs = int(num_envs or default_num_workers(env, os.cpu_count() or 1))
        if self.num_envs < 1:
            raise ConfigError(f"num_envs must be >= 1, got {self.num_envs}")
        vectorization = vectorization or ("async" if self.num_envs > 1 else "sync")
        mode = gym.vector.AutoresetMode.SAME_STEP
        self.envs: gym.vector.VectorEnv
        if vectorization == "async":
            self.envs = gym.vector.AsyncVectorEnv(
                [factory] * self.num_envs, autoreset_mode=mode, context=context, worker=_quiet_async_worker
            )
        elif vectorization == "sync":
            self.envs = gym.vector.SyncVectorEnv([factory] * self.num_envs, autoreset_mode=mode)
        else:
            raise ConfigError(f"unknown vectorization {vectorization!r}; use 'async' or 'sync'")
        self.vectorization = vectorization
        self.key: tuple | None = None  # set by open_evaluator: where release_evaluator keeps it
        self._interrupted = False

    def close(self) -> None:
        if self.vectorization == "async" and self._interrupted:
            # A reset or step was cut off half-way (Ctrl-C, an error): the pipes may hold half an exchange, so
            # waiting for it could hang forever; the workers are ended instead (SIGTERM, no traceback).
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Calling `close` while waiting for a pending call to `step`"
                self.envs.close(terminate=True)
        else:
            self.envs.close()

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _normalized(self, success: float, episode_return: float, reported: Any) -> float:
        if reported is not None:
            return float(reported)
        if self.spec is None:
            return math.nan
        value = success if self.spec.metric == "success" else episode_return
        return self.spec.normalized_score(value)

    def run(
        self,
        policy: Policy,
        num_episodes: int,
        seed: int | list[int],
        progress: bool = False,
        quotas: np.ndarray | None = None,
    ) -> dict:
        """Run ``num_episodes`` episodes (split into fixed per-sub-env quotas) and return the metrics.

        Sub-environment ``i`` is reset with ``seed + i`` (Gymnasium's vector seeding), or with ``seed[i]`` when a
        list is given, so the result is a function of the seed and the policy only. ``quotas`` sets the episodes of
        each sub-environment explicitly (several agents evaluated side by side, each on its own sub-environments).
        """
        if num_episodes < 1:
            raise ConfigError(f"num_episodes must be >= 1, got {num_episodes}")
        if quotas is None:
            quotas = episode_quotas(num_episodes, self.num_envs)
        elif len(quotas) != self.num_envs or int(np.sum(quotas)) != num_episodes:
            raise ConfigError(f"quotas {list(quotas)} must give {num_episodes} episodes over {self.num_envs} envs")
        finished = np.zeros(self.num_envs, dtype=np.int64)
        returns = np.zeros(self.num_envs)
        lengths = np.zeros(self.num_envs, dtype=np.int64)
        episodes: list[dict] = []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=num_episodes, desc="evaluate", unit="ep", leave=False)
        try:
            observations, _ = self.envs.reset(seed=seed)  # type: ignore[arg-type]  # gymnasium takes a list too
            while np.any(finished < quotas):
                actions = policy(observations)
                observations, rewards, terminated, truncated, infos = self.envs.step(actions)
                active = finished < quotas
                returns += np.where(active, rewards, 0.0)
                lengths += active
                for i in np.flatnonzero(active & (terminated | truncated)):
                    success = _info_value(infos, ("final_info", "success"), i)
                    if success is None:
                        success = _info_value(infos, ("final_info", "episode", "success"), i)
                    success = math.nan if success is None else float(success)
                    reported = _info_value(infos, ("final_info", "episode", "normalized_score"), i)
                    episodes.append(
                        {
                            "env_index": int(i),
                            "episode": int(finished[i]),
                            "success": success,
                            "return": float(returns[i]),
                            "length": int(lengths[i]),
                            "normalized_score": self._normalized(success, float(returns[i]), reported),
                        }
                    )
                    finished[i] += 1
                    returns[i], lengths[i] = 0.0, 0
                    if bar is not None:
                        bar.update(1)
        except BaseException:
            self._interrupted = True  # close() must not wait for the exchange that was cut off
            raise
        finally:
            if bar is not None:
                bar.close()
        episodes.sort(key=lambda e: (e["env_index"], e["episode"]))
        return summarise_episodes(episodes, quotas)


# ============================================================================ evaluators kept across runs
# A leaderboard worker runs cell after cell on the same tasks. Building a MuJoCo task's environments costs about a
# second each (OGBench compiles its model twice), ten for one evaluation, so a worker keeps its evaluators open for
# the next run instead of building them again. Results do not depend on it: every evaluation resets each
# sub-environment with its own seed. Off by default; :func:`keep_evaluators` turns it on for a process.
KEPT_EVALUATORS_MAX = 3
_kept: dict[tuple, Evaluator] | None = None


def keep_evaluators(keep: bool = True) -> None:
    """Keep evaluators open between runs in this process (the newest :data:`KEPT_EVALUATORS_MAX`, and the newest
    video recorder, :func:`fidec_gym.eval.run.video.record_episodes`); ``False`` closes the kept ones and turns it
    off."""
    from fidec_gym.eval.run.video import close_kept_recorder

    global _kept
    if keep:
        _kept = {} if _kept is None else _kept
        return
    for evaluator in (_kept or {}).values():
        evaluator.close()
    _kept = None
    close_kept_recorder()


def evaluators_kept() -> bool:
    """Whether :func:`keep_evaluators` is on in this process (a grid worker)."""
    return _kept is not None


def _evaluator_key(env_id: str, num_envs: int, vectorization: str | None, env_kwargs: dict | None) -> tuple:
    return env_id, num_envs, vectorization, repr(sorted((env_kwargs or {}).items()))


def open_evaluator(
    env_id: str, num_envs: int, vectorization: str | None = None, env_kwargs: dict | None = None
) -> Evaluator:
    """An :class:`Evaluator` for ``env_id``: one kept open by an earlier run of this process, or a new one. Give it
    back with :func:`release_evaluator`."""
    key = _evaluator_key(env_id, num_envs, vectorization, env_kwargs)
    if _kept is not None and key in _kept:
        kept = _kept.pop(key)  # one user at a time
        if all(process.is_alive() for process in getattr(kept.envs, "processes", [])):
            return kept
        kept._interrupted = True  # a sub-environment's process died (the OOM killer, a kill): start afresh
        kept.close()
    evaluator = Evaluator(env_id, num_envs, vectorization=vectorization, env_kwargs=env_kwargs)
    evaluator.key = key
    return evaluator


def release_evaluator(evaluator: Evaluator) -> None:
    """Close ``evaluator``, or keep it for the next run when :func:`keep_evaluators` is on. One whose last run was
    cut off is always closed: its pipes may hold half an exchange."""
    key = evaluator.key
    if _kept is None or key is None or evaluator._interrupted or key in _kept:
        evaluator.close()
        return
    _kept[key] = evaluator
    while len(_kept) > KEPT_EVALUATORS_MAX:
        _kept.pop(next(iter(_kept))).close()  # the oldest


def summarise_episodes(episodes: list[dict], quotas: np.ndarray | None = None) -> dict:
    """Means and per-episode lists of success, normalised score, return and length."""
    result: dict[str, Any] = {"num_episodes": len(episodes)}
    for key in ("success", "normalized_score", "return", "length"):
        values = np.array([e[key] for e in episodes], dtype=np.float64)
        finite = values[np.isfinite(values)]
        result[key] = float(finite.mean()) if finite.size else math.nan
        result[f"{key}_std"] = float(finite.std()) if finite.size else math.nan
        result[f"episode_{key}"] = values.tolist()
    result["episode_env_index"] = [e["env_index"] for e in episodes]
    if quotas is not None:
        result["quotas"] = quotas.tolist()
    return result


def evaluate(
    agent: Any,
    env_id: str | Callable[[], gym.Env],
    num_episodes: int,
    seed: int,
    num_workers: int | None = None,
    temperature: float = 0.0,
    video_dir: str | Path | None = None,
    video_episodes: int = 0,
    frame_skip: int = 1,
    env_kwargs: dict | None = None,
    *,
    vectorization: str | None = None,
    agent_name: str = "agent",
    step: int = 0,
    progress: bool = False,
) -> dict:
    """Evaluate ``agent`` on ``env_id`` for ``num_episodes`` episodes and return the metrics.

    Args:
        agent: an agent (``sample_actions(observations, seed, temperature)``) or a callable numpy policy.
        env_id: a task ID or an environment factory (see :class:`Evaluator`).
        num_episodes: episodes in total, split into fixed quotas over the workers.
        seed: seeds the environments (sub-env ``i`` gets ``seed + i``) and the action sampling.
        num_workers: evaluation processes, one sub-environment each; 1 steps up to 32 sub-environments in one
            process (:func:`evaluation_layout`). Default: one per core (toy tasks: one process).
        temperature: sampling temperature. 0 is the evaluation convention: BC/IQL/ReBRAC act with their mean,
            flow agents ignore the temperature and always draw one noise sample.
        video_dir, video_episodes, frame_skip: additionally record ``video_episodes`` roll-outs as mp4 in
            ``video_dir`` (separate episodes in one rendering env; not counted in the metrics).
        env_kwargs: keyword arguments for ``gym.make``.

    Returns:
        ``success``, ``normalized_score``, ``return``, ``length`` (means over episodes, NaN where an env does not
        report a value), their ``*_std``, per-episode lists ``episode_*``, ``num_episodes``, ``quotas``, and
        ``videos`` (paths) when recorded.
    """
    check_evaluation_settings(num_episodes, num_workers, temperature, video_episodes, frame_skip)
    workers, layout = evaluation_layout(env_id, num_episodes, num_workers)
    policy = make_policy(agent, seed, temperature)
    with Evaluator(env_id, workers, vectorization=vectorization or layout, env_kwargs=env_kwargs) as evaluator:
        result = evaluator.run(policy, num_episodes, seed, progress=progress)
    if video_episodes > 0:
        if video_dir is None:
            raise ConfigError("video_episodes > 0 needs a video_dir to write the mp4 files to")
        if not isinstance(env_id, str):
            raise ConfigError("videos need a task ID (the environment is re-made with render_mode='rgb_array')")
        from fidec_gym.eval.run.video import record_episodes

        paths = record_episodes(
            make_policy(agent, seed + 1, temperature),
            env_id,
            video_episodes,
            video_dir,
            seed=seed,
            agent_name=agent_name,
            step=step,
            frame_skip=frame_skip,
            env_kwargs=env_kwargs,
        )
        result["videos"] = [str(p) for p in paths]
    return result
