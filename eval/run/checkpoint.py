"""Training checkpoints that continue a run exactly.

A checkpoint is a directory ``RUN_DIR/checkpoints/step_<N>/`` holding

* ``agent.msgpack``: the agent in its own versioned format (params, optimiser state, agent RNG, step, config);
* ``trainer.pkl``: everything else the loop needs (sampler and replay RNG states, Python/NumPy global RNG states,
  the online replay rows, the evaluation history, the step counter, the training config);
* ``meta.json``: a readable summary (step, agent, task, time).

It is written to a hidden temporary directory and renamed into place, so a crash (even ``kill -9``) leaves either
the previous checkpoint or the new one, never a half-written one. Older checkpoints are removed only after the new
one is in place.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from fidec_gym.errors import ResultsError, ResultsNotFoundError

TRAINER_FORMAT_VERSION = 1
AGENT_FILE = "agent.msgpack"
TRAINER_FILE = "trainer.pkl"
META_FILE = "meta.json"
_PREFIX = "step_"


@dataclass
class TrainerState:
    """Everything besides the agent that a checkpoint saves and a resume restores, and nothing else."""

    step: int
    train_config: dict  # TrainConfig.record(): what the run is
    resolved_overrides: dict  # the agent config overrides after per-task hyperparameters
    sampler: dict
    val_sampler: dict | None
    python_random: Any
    numpy_global: Any
    replay_rng: dict
    replay: dict | None
    evaluations: list
    elapsed: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, state: dict) -> TrainerState:
        names = set(cls.field_names())
        return cls(**{key: value for key, value in state.items() if key in names})


class CheckpointError(ResultsError):
    """A checkpoint is missing, unreadable or belongs to another run; the message says what to do."""


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as (step, path), oldest first."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        if entry.is_dir() and entry.name.startswith(_PREFIX) and (entry / TRAINER_FILE).exists():
            try:
                found.append((int(entry.name[len(_PREFIX) :]), entry))
            except ValueError:
                continue
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint directory of a run, or None."""
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1][1] if checkpoints else None


def save_checkpoint(run_dir: str | Path, step: int, agent: Any, trainer_state: dict, meta: dict, keep: int = 2) -> Path:
    """Write a checkpoint for ``step`` atomically and keep the newest ``keep`` checkpoints (two by default, so a
    damaged newest one has a fallback). ``meta`` (agent, task, seed, results directory) goes to meta.json."""
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{_PREFIX}{step:010d}"
    tmp = root / f".tmp-{_PREFIX}{step:010d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        agent.save(tmp / AGENT_FILE)
        state = {"format_version": TRAINER_FORMAT_VERSION, "step": int(step), **trainer_state}
        with open(tmp / TRAINER_FILE, "wb") as stream:
            pickle.dump(state, stream, protocol=pickle.HIGHEST_PROTOCOL)
            stream.flush()
            os.fsync(stream.fileno())
        meta = {"step": int(step), **meta, "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        _fsync_dir(tmp)
        if final.exists():  # re-saving a step (e.g. after a resume): move the old copy aside first
            old = root / f".old-{final.name}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for _, path in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        # Renamed first (atomic), so a kill during the deletion leaves a hidden folder that the next start removes,
        # never a half-deleted step_* folder that looks like a checkpoint.
        doomed = root / f".old-{path.name}-{os.getpid()}"
        os.replace(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    return final


def remove_stale_temporaries(run_dir: str | Path) -> None:
    """Delete half-written checkpoint directories left by a killed process (never complete checkpoints)."""
    root = checkpoint_root(run_dir)
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(entry, ignore_errors=True)


def load_trainer_state(checkpoint_dir: str | Path, required: Iterable[str] = ()) -> dict:
    """The trainer state of a checkpoint directory (validated format, holding every key in ``required``)."""
    path = Path(checkpoint_dir) / TRAINER_FILE
    try:
        with open(path, "rb") as stream:
            state = pickle.load(stream)
    except FileNotFoundError:
        raise CheckpointError(f"{checkpoint_dir} is not a training checkpoint (no {TRAINER_FILE})") from None
    except Exception as error:
        raise CheckpointError(
            f"{path} is unreadable ({error}); delete that checkpoint directory to fall back to "
            "an earlier one, or start the run again without --resume"
        ) from None
    if not isinstance(state, dict) or state.get("format_version") != TRAINER_FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has trainer format {state.get('format_version') if isinstance(state, dict) else '?'}; this "
            f"fidec-gym reads version {TRAINER_FORMAT_VERSION}; start the run again in a fresh --out directory"
        )
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(
            f"{path} is incomplete (no {', '.join(missing)}); delete that checkpoint directory to fall back to an "
            "earlier one, or start the run again without --resume"
        )
    return state


def resolve_agent_file(path: str | Path) -> Path:
    """The agent file behind ``path``: an agent file, a checkpoint directory, a run's ``checkpoints`` directory or
    a run directory (the newest checkpoint is used)."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.exists():
        raise ResultsNotFoundError(
            f"no checkpoint at {path}; pass an agent file, a checkpoint directory or a run "
            "directory written by `fidec train`"
        )
    if (path / AGENT_FILE).is_file():
        return path / AGENT_FILE
    for run_dir in (path, path.parent):  # a run directory, or its checkpoints/ directory
        latest = latest_checkpoint(run_dir)
        if latest is not None:
            return latest / AGENT_FILE
    raise ResultsNotFoundError(
        f"{path} holds no checkpoint ({AGENT_FILE} or checkpoints/step_*); train with "
        "`fidec train ... --checkpoint-interval N` or pass the agent file itself"
    )


def checkpoint_metadata(agent_file: str | Path) -> dict:
    """The trainer facts stored beside an agent file (agent, env_id, seed, step), or {} for a bare agent file."""
    meta = Path(agent_file).parent / META_FILE
    if meta.is_file():
        try:
            return json.loads(meta.read_text())
        except ValueError:
            return {}
    return {}


def load_newest_readable(run_dir: str | Path, load: Callable[[Path], Any]) -> Any:
    """``load(checkpoint)`` on the newest checkpoint of ``run_dir``, falling back to the previous one (with a warning)
    when the newest is damaged: a :class:`CheckpointError`, an ``OSError`` or a ``ValueError`` from reading it. Any
    other :class:`ResultsError` (e.g. a checkpoint of a different run) is raised at once."""
    checkpoints = [path for _, path in list_checkpoints(run_dir)]
    for index, checkpoint in enumerate(reversed(checkpoints)):
        try:
            return load(checkpoint)
        except ResultsError as error:
            if not isinstance(error, CheckpointError):
                raise
            failure: Exception = error
        except (OSError, ValueError) as error:  # e.g. a truncated agent file
            failure = error
        if index + 1 < len(checkpoints):
            print(f"warning: {failure}; resuming from the previous checkpoint instead", flush=True)
            continue
        raise CheckpointError(
            f"{failure}; no earlier checkpoint to fall back to: delete {Path(run_dir)} (or pick "
            "another --out) and train without --resume"
        ) from None
    raise CheckpointError(f"no checkpoint in {run_dir}")
