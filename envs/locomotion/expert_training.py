"""Training the SAC locomotion experts with stable-baselines3 (docs/datasets.md §2.3), resumable.

While a run trains, its directory holds ``checkpoint/`` (the model, its replay buffer and the run state), written
atomically every ``checkpoint_every`` steps, from which ``resume=True`` continues; at the end ``expert.zip`` and
``expert.json`` are written (:mod:`~fidec_gym.envs.locomotion.experts` loads them).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from fidec_gym.errors import ConfigError
from fidec_gym.files import atomic_path, atomic_write_json

from .common import check_training_settings, library_versions
from .experts import (
    CHECKPOINT_DIR,
    EXPERT_FILE,
    EXPERT_FORMAT_VERSION,
    PROVENANCE_FILE,
    ExpertError,
    ExpertNotFoundError,
    _require_sb3,
    evaluate_expert,
    user_experts_dir,
)
from .online import make_online_env, online_task

# OGBench's SAC (impls/agents/sac.py and data_gen_scripts/main_sac.py), mapped onto stable-baselines3's SAC.
SAC_DEFAULTS: dict[str, Any] = {
    "learning_rate": 1e-4,
    "batch_size": 256,
    "gamma": 0.99,
    "tau": 0.005,
    "buffer_size": 1_000_000,
    "learning_starts": 10_000,  # OGBench's seed_steps of uniform random actions
    "target_entropy_multiplier": 0.5,  # target entropy = -0.5 * action_dim
    "ent_coef": "auto",
}


def _checkpoint_paths(out: Path) -> dict[str, Path]:
    directory = out / CHECKPOINT_DIR
    return {
        "dir": directory,
        "model": directory / "model.zip",
        "buffer": directory / "replay_buffer.pkl",
        "state": directory / "state.json",
    }


def _load_checkpoint(paths: dict[str, Path], env=None) -> tuple[dict, Any]:
    """The state and SAC model (with its replay buffer when ``env`` is given, to train on) of a run's checkpoint."""
    from stable_baselines3 import SAC

    try:
        state = json.loads(paths["state"].read_text())
        model = SAC.load(str(paths["model"]), env=env, device="cpu")
        if env is not None and paths["buffer"].is_file():
            model.load_replay_buffer(str(paths["buffer"]))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:  # JSONDecodeError: a ValueError
        raise ExpertError(
            f"{paths['dir']}: the checkpoint cannot be read ({type(error).__name__}: {error}); delete the "
            "directory to start again, or choose another --out"
        ) from error
    return state, model


def _save_model(model, path: Path) -> None:
    with atomic_path(path, suffix=".zip") as tmp:
        model.save(str(tmp))
        # SB3 appends .zip when the name lacks it; the temporary name ends in .zip so it writes tmp itself.


def _save_buffer(model, path: Path) -> None:
    with atomic_path(path, suffix=".pkl") as tmp:
        model.save_replay_buffer(str(tmp))


def train_expert(
    name: str = "ant",
    steps: Optional[int] = None,
    seed: int = 0,
    out: Optional[str | os.PathLike] = None,
    eval_every: int = 25_000,
    eval_episodes: int = 5,
    checkpoint_every: int = 10_000,
    resume: bool = False,
    progress: bool = True,
    threads: int = 1,
    learning_starts: Optional[int] = None,
    max_episode_steps: Optional[int] = None,
    command: Optional[str] = None,
) -> Path:
    """Train the SAC expert of the online task ``name`` to ``steps`` environment steps (default: OGBench's budget)
    and write ``<out>/expert.zip`` + ``<out>/expert.json``. Returns ``out``.

    ``resume=True`` continues from ``<out>/checkpoint`` (a larger ``steps`` trains on); without it an existing
    checkpoint is an error, so that a run is never overwritten by accident. Resumed runs are not bitwise identical to
    uninterrupted ones (the episode in progress restarts and the random streams are not restored)."""
    task = online_task(name)
    steps = task.ogbench_steps if steps is None else int(steps)
    check_training_settings(
        steps, eval_every, eval_episodes, checkpoint_every, threads, learning_starts, max_episode_steps, seed, out
    )
    _require_sb3()
    import torch
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback
    from tqdm import tqdm

    torch.set_num_threads(threads)
    out = Path(out).expanduser() if out is not None else user_experts_dir() / task.name
    paths = _checkpoint_paths(out)
    env = make_online_env(task, max_episode_steps=max_episode_steps)
    starts = SAC_DEFAULTS["learning_starts"] if learning_starts is None else int(learning_starts)
    starts = min(starts, max(1, steps // 2))

    state: dict[str, Any]
    if paths["model"].is_file() and not resume:
        raise ConfigError(
            f"{out} already holds a training run ({paths['model']}); pass --resume to continue it or choose another "
            "--out"
        )
    if resume and paths["model"].is_file():
        state, model = _load_checkpoint(paths, env)
        if state.get("name") != task.name:
            raise ConfigError(f"{out} holds a {state.get('name')!r} run, not {task.name!r}; choose another --out")
        print(f"resuming {task.name} from step {model.num_timesteps:,} in {out}", file=sys.stderr)
    else:
        if resume:
            print(f"no checkpoint in {out}: starting a new run", file=sys.stderr)
        action_dim = int(np.prod(env.action_space.shape or (0,)))
        observation_dim = int(np.prod(env.observation_space.shape or (0,)))
        hyper = {
            "learning_rate": SAC_DEFAULTS["learning_rate"],
            "batch_size": SAC_DEFAULTS["batch_size"],
            "gamma": SAC_DEFAULTS["gamma"],
            "tau": SAC_DEFAULTS["tau"],
            "buffer_size": int(min(SAC_DEFAULTS["buffer_size"], steps)),
            "learning_starts": starts,
            "train_freq": task.train_freq,
            "gradient_steps": 1,
            "ent_coef": SAC_DEFAULTS["ent_coef"],
            "target_entropy": -SAC_DEFAULTS["target_entropy_multiplier"] * action_dim,
        }
        model = SAC(
            "MlpPolicy",
            env,
            policy_kwargs={"net_arch": dict(task.net_arch)},
            seed=seed,
            device="cpu",
            verbose=0,
            **hyper,
        )
        state = {
            "format_version": EXPERT_FORMAT_VERSION,
            "name": task.name,
            "ogbench_id": task.ogbench_id,
            "gym_id": task.gym_id,
            "algorithm": "SAC",
            "framework": "stable-baselines3",
            "seed": seed,
            "hyperparameters": {**hyper, "net_arch": task.net_arch},
            "observation": (
                f"{observation_dim}-d: the robot state without its xy position, then a unit xy "
                "direction (training: the task direction; generators: towards the next maze subgoal)"
                if task.directional
                else f"{observation_dim}-d: the environment's observation"
            ),
            "action_dim": action_dim,
            "observation_dim": observation_dim,
            "evaluations": [],
            "wall_seconds": 0.0,
            "sessions": [],
        }
    state["target_steps"] = steps
    session = {
        "command": command or " ".join(shlex.quote(a) for a in sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "from_step": int(model.num_timesteps),
        "library": library_versions(),
    }
    state["sessions"].append(session)
    wall_before = float(state["wall_seconds"])
    session_started = time.perf_counter()

    def checkpoint(with_buffer: bool = True) -> None:
        paths["dir"].mkdir(parents=True, exist_ok=True)
        state["steps"] = int(model.num_timesteps)
        state["wall_seconds"] = round(wall_before + time.perf_counter() - session_started, 1)
        session["to_step"] = state["steps"]
        _save_model(model, paths["model"])
        if with_buffer:
            _save_buffer(model, paths["buffer"])
        atomic_write_json(paths["state"], state)

    class Progress(BaseCallback):
        def __init__(self):
            super().__init__()
            self.bar = None

        def _on_training_start(self) -> None:
            self.bar = tqdm(
                total=steps,
                initial=int(self.model.num_timesteps),
                desc=f"training {task.name} expert",
                unit="step",
                disable=not progress,
                smoothing=0.05,
                mininterval=5.0,
            )

        def _on_step(self) -> bool:
            done = int(self.model.num_timesteps)
            self.bar.update(1)
            if eval_episodes and done % eval_every == 0:
                result = evaluate_expert(
                    self.model, task, eval_episodes, seed=10_000 + seed, max_episode_steps=max_episode_steps
                )
                result["step"] = done
                result["wall_seconds"] = round(wall_before + time.perf_counter() - session_started, 1)
                state["evaluations"].append(result)
                self.bar.write(f"step {done:,}: mean return {result['mean_return']:.2f} +- {result['std_return']:.2f}")
            if done % checkpoint_every == 0:
                checkpoint()
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    remaining = steps - int(model.num_timesteps)
    if remaining > 0:
        try:
            model.learn(remaining, callback=Progress(), reset_num_timesteps=False)
        except KeyboardInterrupt:
            checkpoint()
            raise
    checkpoint()
    done = int(model.num_timesteps)
    if eval_episodes and (not state["evaluations"] or state["evaluations"][-1]["step"] != done):
        result = evaluate_expert(model, task, eval_episodes, seed=10_000 + seed, max_episode_steps=max_episode_steps)
        result.update(step=done, wall_seconds=state["wall_seconds"])
        state["evaluations"].append(result)
        atomic_write_json(paths["state"], state)
    env.close()
    write_expert(model, state, out)
    return out


def write_expert(model, state: dict, out: Path) -> None:
    """Write ``expert.zip`` (no replay buffer) and ``expert.json`` into ``out``."""
    from fidec_gym.envs.readers import sha256_file

    out.mkdir(parents=True, exist_ok=True)
    _save_model(model, out / EXPERT_FILE)
    provenance = {k: v for k, v in state.items() if k not in ("target_steps", "library")}
    provenance["framework"] = "stable-baselines3"
    provenance["steps"] = int(model.num_timesteps)
    provenance["final_evaluation"] = state["evaluations"][-1] if state["evaluations"] else None
    provenance["library"] = state["sessions"][-1]["library"] if state["sessions"] else library_versions()
    provenance["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    provenance["sha256"] = sha256_file(out / EXPERT_FILE)
    atomic_write_json(out / PROVENANCE_FILE, provenance)


def export_checkpoint(out: str | os.PathLike) -> Path:
    """Write ``expert.zip``/``expert.json`` from a run's latest checkpoint (e.g. to use a run still in training)."""
    _require_sb3()
    out = Path(out).expanduser()
    paths = _checkpoint_paths(out)
    if not paths["model"].is_file():
        raise ExpertNotFoundError(f"{out} holds no checkpoint; start a run with `fidec experts train ant --out {out}`")
    state, model = _load_checkpoint(paths)
    write_expert(model, state, out)
    return out
