"""Goal-reaching locomotion experts: loading, evaluating, listing (docs/datasets.md §2.3); training is in
:mod:`~fidec_gym.envs.locomotion.expert_training`.

An expert is a directory with ``expert.zip`` (stable-baselines3's own format) and ``expert.json`` (provenance: the
command, steps, seed, library versions, evaluation returns, wall time); while it trains, ``checkpoint/model.zip`` can
be used as an expert too.

The generators never run torch in their loops: :func:`load_expert` reads the zip once with stable-baselines3 and
keeps the deterministic actor (``tanh(mu(MLP(obs)))``) as NumPy arrays (:class:`ExpertPolicy`), which pickle cheaply
to worker processes and cost microseconds per action.

Where experts are found: an explicit path; the experts shipped with the package (``envs/data/experts/<name>/``); the
user directory ``$FIDEC_EXPERTS_DIR`` or ``~/.fidec/experts`` (where ``fidec experts train`` writes by default).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from fidec_gym.errors import DataError, DataNotFoundError, MissingDependencyError

from .common import check_directories
from .online import ONLINE_TASKS, OnlineTask, make_online_env, online_task

EXPERT_FORMAT_VERSION = 1
EXPERT_FILE = "expert.zip"
PROVENANCE_FILE = "expert.json"
CHECKPOINT_DIR = "checkpoint"
EXPERTS_DIR_ENV = "FIDEC_EXPERTS_DIR"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "experts"

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


# -- evaluation ----------------------------------------------------------------------------------------------------
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
    "list_experts",
    "load_expert",
    "resolve_expert_path",
    "train_command",
    "user_experts_dir",
]
