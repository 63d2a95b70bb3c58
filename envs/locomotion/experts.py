"""Goal-reaching locomotion experts: SAC training with stable-baselines3, loading, listing (docs/datasets.md §2.3).

An expert is a directory with ``expert.zip`` (stable-baselines3's own format) and ``expert.json`` (provenance: the
command, steps, seed, library versions, evaluation returns, wall time). While it trains, the directory also holds
``checkpoint/`` (the model, its replay buffer and the run state), written atomically every ``checkpoint_every`` steps,
from which ``resume=True`` continues; ``checkpoint/model.zip`` can be used as an expert while training goes on.

The generators never run torch in their loops: :func:`load_expert` reads the zip once with stable-baselines3 and
keeps the deterministic actor (``tanh(mu(MLP(obs)))``) as NumPy arrays (:class:`ExpertPolicy`), which pickle cheaply
to worker processes and cost microseconds per action.

Where experts are found: an explicit path; the experts shipped with the package (``envs/data/experts/<name>/``); the
user directory ``$FIDEC_EXPERTS_DIR`` or ``~/.fidec/experts`` (where ``fidec experts train`` writes by default).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from fidec_gym.errors import ConfigError, DataError, DataNotFoundError, MissingDependencyError
from fidec_gym.files import atomic_path, atomic_write_json

from .common import check_directories, check_training_settings, library_versions
from .online import ONLINE_TASKS, OnlineTask, make_online_env, online_task

EXPERT_FORMAT_VERSION = 1
EXPERT_FILE = "expert.zip"
PROVENANCE_FILE = "expert.json"
CHECKPOINT_DIR = "checkpoint"
EXPERTS_DIR_ENV = "FIDEC_EXPERTS_DIR"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "experts"

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
TORCH_PIN = "torch==2.13.0"
INSTALL_HINT = (
    f'install the CPU build of torch first, then the extra: `pip install {TORCH_PIN} && pip install -e ".[experts]"` '
    "(a bare `pip install torch` pulls gigabytes of CUDA libraries)"
)


class ExpertError(DataError):
    """An expert file that cannot be used (corrupt, wrong format, wrong observation or action size)."""


class ExpertNotFoundError(DataNotFoundError):
    """No expert where one was looked for; the message names the command that trains one."""


def user_experts_dir() -> Path:
    return Path(os.environ.get(EXPERTS_DIR_ENV) or "~/.fidec/experts").expanduser()


def train_command(name: str) -> str:
    task = online_task(name)
    return f"fidec experts train {task.name} --steps {task.ogbench_steps}"


def _require_sb3():
    try:
        import stable_baselines3  # noqa: F401
        import torch  # noqa: F401
    except ImportError as error:
        raise MissingDependencyError(
            f"training and loading experts needs stable-baselines3 and torch: {INSTALL_HINT}"
        ) from error


# -- the NumPy policy ----------------------------------------------------------------------------------------------
@dataclass
class ExpertPolicy:
    """The deterministic actor of a SAC expert as NumPy arrays: ``tanh(W_out relu(... relu(W_1 x)))``."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    observation_dim: int
    action_dim: int
    path: str = ""
    sha256: str = ""
    provenance: Optional[dict] = None

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        x = np.asarray(observation, dtype=np.float32)
        for weight, bias in zip(self.weights[:-1], self.biases[:-1]):
            x = np.maximum(x @ weight + bias, 0.0)
        return np.tanh(x @ self.weights[-1] + self.biases[-1])

    def summary(self) -> dict[str, Any]:
        info = {"path": self.path, "sha256": self.sha256}
        if self.provenance:
            for key in ("name", "ogbench_id", "steps", "seed", "final_evaluation", "library"):
                if key in self.provenance:
                    info[key] = self.provenance[key]
        return info


def _policy_from_model(model) -> tuple[list[np.ndarray], list[np.ndarray]]:
    import torch

    actor = model.policy.actor
    layers = [m for m in actor.latent_pi if isinstance(m, torch.nn.Linear)] + [actor.mu]
    others = [m for m in actor.latent_pi if not isinstance(m, (torch.nn.Linear, torch.nn.ReLU))]
    if others or actor.use_sde or type(actor.features_extractor).__name__ != "FlattenExtractor":
        raise ExpertError(
            "the expert's actor is not a plain ReLU MLP (found "
            f"{[type(m).__name__ for m in others]}, sde={actor.use_sde}); train it with `fidec experts train`"
        )
    weights = [m.weight.detach().cpu().numpy().T.astype(np.float32) for m in layers]
    biases = [m.bias.detach().cpu().numpy().astype(np.float32) for m in layers]
    return weights, biases


def resolve_expert_path(expert: Optional[str | os.PathLike], name: str) -> Path:
    """The ``expert.zip`` to use for the online task ``name``: ``expert`` if given (a zip or a directory holding
    one), else the shipped expert, else the user directory's. Raises ExpertNotFoundError naming the training command."""
    if expert is not None:
        path = Path(expert).expanduser()
        if path.is_dir():
            for candidate in (path / EXPERT_FILE, path / CHECKPOINT_DIR / "model.zip"):
                if candidate.is_file():
                    return candidate
            raise ExpertNotFoundError(
                f"{path} holds no {EXPERT_FILE} (nor {CHECKPOINT_DIR}/model.zip); pass the zip file itself, or train "
                f"an expert with `{train_command(name)} --out {path}`"
            )
        if not path.is_file():
            raise ExpertNotFoundError(
                f"expert file {path} does not exist; pass an existing stable-baselines3 zip (`fidec experts list` "
                f"shows the known ones) or train one with `{train_command(name)}`"
            )
        return path
    key = online_task(name).name
    tried = [SHIPPED_DIR / key / EXPERT_FILE, user_experts_dir() / key / EXPERT_FILE]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(p) for p in tried)
    raise ExpertNotFoundError(
        f"no {key} expert found (looked in {looked}). Train one with `{train_command(key)}` (OGBench's budget; "
        f"see docs/datasets.md §2.3 for the cost), then pass it with --expert "
        f"{user_experts_dir() / key}, or let it be found there by default"
    )


def read_provenance(zip_path: Path) -> Optional[dict]:
    """``expert.json`` beside ``expert.zip`` (or the checkpoint's ``state.json``), if readable."""
    for candidate in (zip_path.parent / PROVENANCE_FILE, zip_path.parent / "state.json"):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except (OSError, json.JSONDecodeError):
                return None
    return None


def load_expert(
    expert: Optional[str | os.PathLike],
    name: str = "ant",
    observation_dim: Optional[int] = None,
    action_dim: Optional[int] = None,
) -> ExpertPolicy:
    """Load an expert for the online task ``name`` (see :func:`resolve_expert_path`) as an :class:`ExpertPolicy`,
    checking its observation and action sizes."""
    import zipfile

    from fidec_gym.envs.readers import sha256_file

    path = resolve_expert_path(expert, name)
    _require_sb3()
    from stable_baselines3 import SAC

    try:
        model = SAC.load(str(path), device="cpu")
    except (zipfile.BadZipFile, KeyError, ValueError, RuntimeError, EOFError, OSError, TypeError) as error:
        raise ExpertError(
            f"{path}: not a readable stable-baselines3 SAC expert ({type(error).__name__}: {error}); pass a zip "
            f"written by `fidec experts train` or train one with `{train_command(name)}`"
        ) from error
    weights, biases = _policy_from_model(model)
    obs_dim, act_dim = int(weights[0].shape[0]), int(weights[-1].shape[1])
    if (observation_dim is not None and obs_dim != observation_dim) or (
        action_dim is not None and act_dim != action_dim
    ):
        raise ExpertError(
            f"{path}: the expert maps {obs_dim}-d observations to {act_dim}-d actions, but the {name} generator needs "
            f"{observation_dim}-d observations and {action_dim}-d actions; use an expert trained with "
            f"`{train_command(name)}`"
        )
    return ExpertPolicy(weights, biases, obs_dim, act_dim, str(path), sha256_file(path), read_provenance(path))


# -- training ------------------------------------------------------------------------------------------------------
def evaluate_expert(
    model_or_policy, task: OnlineTask, episodes: int, seed: int, max_episode_steps: Optional[int] = None
) -> dict[str, float]:
    """Mean and spread of the deterministic policy's return on the training task (seeded resets)."""
    env = make_online_env(task, max_episode_steps=max_episode_steps)
    returns, lengths = [], []
    try:
        for episode in range(episodes):
            observation, _ = env.reset(seed=seed + episode)
            total, steps, done = 0.0, 0, False
            while not done:
                if isinstance(model_or_policy, ExpertPolicy):
                    action = model_or_policy(observation)
                else:
                    action, _ = model_or_policy.predict(observation, deterministic=True)
                observation, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                steps += 1
                done = terminated or truncated
            returns.append(total)
            lengths.append(steps)
    finally:
        env.close()
    return {
        "mean_return": round(float(np.mean(returns)), 4),
        "std_return": round(float(np.std(returns)), 4),
        "mean_length": round(float(np.mean(lengths)), 1),
        "episodes": episodes,
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


# -- listing -------------------------------------------------------------------------------------------------------
def list_experts(extra_dirs: tuple = ()) -> list[dict[str, Any]]:
    """Every expert directory (shipped, user, ``extra_dirs``) with its provenance summary; runs in progress too."""
    rows = []
    check_directories(extra_dirs, "--dir", "a directory that holds experts")
    roots = [("shipped", SHIPPED_DIR), ("user", user_experts_dir())] + [
        ("dir", Path(d).expanduser()) for d in extra_dirs
    ]
    seen = set()
    for origin, root in roots:
        if not root.is_dir():
            continue
        candidates = sorted(
            {p.parent for p in root.glob(f"*/{EXPERT_FILE}")}
            | {p.parent.parent for p in root.glob(f"*/{CHECKPOINT_DIR}/state.json")}
        )
        if (root / EXPERT_FILE).is_file() or (root / CHECKPOINT_DIR / "state.json").is_file():
            candidates.insert(0, root)
        for directory in candidates:
            if directory.resolve() in seen:
                continue
            seen.add(directory.resolve())
            info = {}
            for file in (directory / PROVENANCE_FILE, directory / CHECKPOINT_DIR / "state.json"):
                if file.is_file():
                    try:
                        info = json.loads(file.read_text())
                    except (OSError, json.JSONDecodeError):
                        info = {}
                    break
            final = info.get("final_evaluation") or (info.get("evaluations") or [None])[-1]
            rows.append(
                {
                    "origin": origin,
                    "name": info.get("name", directory.name),
                    "path": str(directory / EXPERT_FILE)
                    if (directory / EXPERT_FILE).is_file()
                    else str(directory / CHECKPOINT_DIR / "model.zip"),
                    "status": "ready" if (directory / EXPERT_FILE).is_file() else "training (checkpoint)",
                    "steps": info.get("steps"),
                    "seed": info.get("seed"),
                    "mean_return": final.get("mean_return") if final else None,
                    "wall_hours": round(info["wall_seconds"] / 3600, 2) if info.get("wall_seconds") else None,
                    "maze_success": info.get("maze_success"),
                    "library": info["library"]
                    if isinstance(info.get("library"), dict)
                    else (info.get("sessions") or [{}])[-1].get("library"),
                }
            )
    return rows


__all__ = [
    "ONLINE_TASKS",
    "ExpertError",
    "ExpertNotFoundError",
    "ExpertPolicy",
    "evaluate_expert",
    "export_checkpoint",
    "list_experts",
    "load_expert",
    "resolve_expert_path",
    "train_command",
    "train_expert",
    "user_experts_dir",
]
