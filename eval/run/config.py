"""What one training run is: its settings (:class:`TrainConfig`), checked once, and resolved once into a
:class:`ResolvedRun` that says everything that runs (task, agent config after the per-task hyperparameters, where
results go). The command line, the leaderboard presets and the Python API all build runs from this one definition;
``fidec train``'s flags are derived from the fields below.

Output layout (one for every entry point)::

    RESULTS_DIR/results.sqlite                           the results store
    RESULTS_DIR/runs/<agent>__<task>__seed<S>[__<cell>]/ metrics.csv, summary.json, checkpoints/, videos/
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fidec_gym.errors import ConfigError
from fidec_gym.names import AGENT_NAMES

DIVERGENCE_TABLES = ("paper", "fidec_scripts", "deflow_readme")
RUNS_DIRNAME = "runs"

# Settings that define what is trained; a checkpoint may only be resumed when they are unchanged.
IDENTITY_FIELDS = (
    "agent",
    "env_id",
    "seed",
    "agent_overrides",
    "use_task_hyperparameters",
    "divergence_table",
    "dataset_path",
    "updates_per_dispatch",
)
# Settings that say where and how a run is written, not what it is; left out of the stored run config.
PLACEMENT_FIELDS = ("results_dir", "tensorboard", "wandb", "eval_workers", "progress")


def _setting(
    default: Any, help: str, minimum: int | None = None, flag: str | None = None, choices: tuple | None = None
) -> Any:
    """A field with its help text, its lower bound and its command-line flag (default: --field-name)."""
    metadata = {"help": help, "minimum": minimum, "flag": flag, "choices": choices}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """What to train and how. Defaults: the paper's state-based OGBench protocol (docs/algorithms.md §11)."""

    agent: str = _setting("", "agent: " + ", ".join(AGENT_NAMES), choices=AGENT_NAMES)
    env_id: str = _setting("", "task ID, e.g. fidec/cube-single-play-singletask-task2-v0", flag="--env")
    seed: int = _setting(0, "random seed of the agent, the batch sampler and the evaluations", minimum=0)
    offline_steps: int = _setting(
        1_000_000, "offline training steps (the paper: 1M on OGBench, 500K on D4RL)", minimum=0, flag="--steps"
    )
    online_steps: int = _setting(0, "online fine-tuning steps after the offline phase", minimum=0)
    eval_interval: int = _setting(
        100_000, "evaluate every this many steps (and at step 1 and the last step)", minimum=1
    )
    eval_episodes: int = _setting(50, "episodes per evaluation", minimum=1)
    eval_workers: int | None = _setting(
        None, "evaluation processes (default: one per core, at most the episodes)", minimum=1
    )
    log_interval: int = _setting(5_000, "log training and validation losses every this many steps", minimum=1)
    checkpoint_interval: int = _setting(100_000, "write a resumable checkpoint every this many steps", minimum=1)
    agent_overrides: dict = _setting({}, "agent config overrides, applied after the per-task hyperparameters")
    use_task_hyperparameters: bool = _setting(True, "apply the paper's per-task hyperparameters (alpha, delta, ...)")
    divergence_table: str = _setting(
        "paper",
        "which table of per-task trust-region sizes delta to use (docs/algorithms.md D4)",
        choices=DIVERGENCE_TABLES,
    )
    dataset_path: str | None = _setting(
        None, "dataset file or directory (default: $FIDEC_DATA_DIR, then the standard places)", flag="--dataset"
    )
    results_dir: str = _setting("results", "results directory: results.sqlite and runs/", flag="--out")
    video_episodes: int = _setting(0, "record this many mp4 roll-outs at the end", minimum=0, flag="--videos")
    video_frame_skip: int = _setting(1, "keep every K-th frame in videos", minimum=1, flag="--frame-skip")
    updates_per_dispatch: int = _setting(1, "fuse this many offline updates into one compiled call", minimum=1)
    tensorboard: bool = _setting(False, "also log to TensorBoard (tensorboardX)")
    wandb: bool = _setting(False, "also log to Weights & Biases (offline mode unless configured)")

    @property
    def total_steps(self) -> int:
        return self.offline_steps + self.online_steps

    def validate(self) -> None:
        """Check every value's type and range (no JAX import); raise :class:`ConfigError` naming the setting."""
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            _check_type(item.name, value, str(item.type))  # a string: annotations are postponed
            minimum = item.metadata.get("minimum")
            if minimum is not None and value is not None and value < minimum:
                raise ConfigError(f"{_name(item)} must be >= {minimum}, got {value}")
            choices = item.metadata.get("choices")
            if choices and value not in choices:
                close = difflib.get_close_matches(str(value), choices, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(
                    f"{_name(item)}: unknown {item.name.replace('_', ' ')} {value!r}{hint}; valid "
                    f"{item.name.replace('_', ' ')}s: {', '.join(choices)}"
                )
        if self.total_steps < 1:
            raise ConfigError("nothing to train: set offline_steps (--steps) or online_steps (--online-steps) > 0")
        from fidec_gym.envs.catalogue import task_info

        spec = task_info(self.env_id)  # unknown task -> UnknownTaskError with close names
        if self.online_steps and spec.suite == "visual":
            raise ConfigError(
                f"online fine-tuning is not supported for pixel tasks ({self.env_id}); the paper has "
                "no visual offline-to-online runs; set online_steps=0"
            )
        if self.dataset_path is not None and spec.suite == "toy":
            raise ConfigError(
                f"{self.env_id} is a toy task whose data is sampled from its analytic law; it reads "
                f"no dataset file, so drop --dataset {self.dataset_path}"
            )
        if self.dataset_path is not None and not Path(self.dataset_path).expanduser().exists():
            raise ConfigError(
                f"--dataset {self.dataset_path}: no such file or directory; pass the dataset file or "
                "the directory that holds it"
            )

    def record(self) -> dict:
        """The settings stored with the run (what it is, not where it is written)."""
        record = dataclasses.asdict(self)
        for key in PLACEMENT_FIELDS:
            record.pop(key, None)
        return record


def _name(item: dataclasses.Field) -> str:
    flag = item.metadata.get("flag") or "--" + item.name.replace("_", "-")
    return f"{item.name} ({flag})"


def _check_type(name: str, value: Any, annotation: str) -> None:
    optional = "None" in annotation
    if value is None:
        if optional:
            return
        raise ConfigError(f"{name} must be set, got None")
    kind = annotation.split("|")[0].strip()
    expected = {"int": int, "str": str, "bool": bool, "dict": dict}[kind]
    if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
        if isinstance(value, float) and value.is_integer():
            raise ConfigError(f"{name} must be a whole number, got {value!r}; write {int(value)}")
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    if expected is not int and not isinstance(value, expected):
        raise ConfigError(f"{name} must be {kind}, got {type(value).__name__} {value!r}")


@dataclass(frozen=True)
class ResolvedRun:
    """Everything one run is, resolved once: the settings, the task, the agent config overrides after the per-task
    hyperparameters, and where its results go."""

    config: TrainConfig
    spec: Any  # fidec_gym.envs.catalogue.TaskSpec
    agent_overrides: dict  # offline steps, then per-task hyperparameters, then the user's overrides
    results_dir: Path
    run_dir: Path
    cell: str | None = None

    @property
    def name(self) -> str:
        return self.run_dir.name


def run_directory(results_dir: str | Path, agent: str, task_name: str, seed: int, cell: str | None = None) -> Path:
    name = f"{agent}__{task_name}__seed{seed}" + (f"__{cell}" if cell else "")
    return Path(results_dir).expanduser() / RUNS_DIRNAME / name


def results_dir_of(run_dir: str | Path) -> Path:
    """The results directory that holds ``run_dir`` (the inverse of :func:`run_directory`)."""
    return Path(run_dir).parent.parent


def resolve_agent_overrides(cfg: TrainConfig) -> dict:
    """The run's offline step count, the catalogue's per-task hyperparameters (only keys this agent has), then the
    user's overrides. Checks every key and value against the agent's defaults (before JAX is imported)."""
    from fidec_gym.agents.config import check_overrides, default_config
    from fidec_gym.envs.catalogue import task_hyperparameters

    known = default_config(cfg.agent)
    overrides: dict = {}
    if "offline_steps" in known:  # where the online phase starts (fix_bc_flow_online), as the reference driver does
        overrides["offline_steps"] = cfg.offline_steps
    if cfg.use_task_hyperparameters:
        table = task_hyperparameters(
            cfg.env_id, cfg.agent, divergence_table=cfg.divergence_table, offline_to_online=cfg.online_steps > 0
        )
        overrides.update({key: value for key, value in table.items() if key in known})
    overrides.update(cfg.agent_overrides)
    check_overrides(cfg.agent, overrides)
    return overrides


def resolve_run(cfg: TrainConfig, cell: str | None = None) -> ResolvedRun:
    """Validate ``cfg`` and resolve it into a :class:`ResolvedRun`; nothing is written."""
    from fidec_gym.envs.catalogue import task_info

    cfg.validate()
    spec = task_info(cfg.env_id)
    results_dir = Path(cfg.results_dir).expanduser().resolve()
    return ResolvedRun(
        config=cfg,
        spec=spec,
        agent_overrides=resolve_agent_overrides(cfg),
        results_dir=results_dir,
        run_dir=run_directory(results_dir, cfg.agent, spec.name, cfg.seed, cell),
        cell=cell,
    )


CODE_VERSION_ENV = "FIDEC_CODE_VERSION"


def code_version() -> str:
    """Installed fidec-gym version, plus the git commit when running from a checkout.

    Asked once per program tree: the answer goes into ``$FIDEC_CODE_VERSION``, which spawned workers inherit, so a
    worker that already runs JAX's threads never forks ``git``.
    """
    known = os.environ.get(CODE_VERSION_ENV)
    if known:
        return known
    from importlib.metadata import PackageNotFoundError, version

    try:
        base = version("fidec-gym")
    except PackageNotFoundError:
        base = "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            text=True,
            capture_output=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    os.environ[CODE_VERSION_ENV] = f"{base}+{commit}" if commit else base
    return os.environ[CODE_VERSION_ENV]
