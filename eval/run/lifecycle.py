"""What every training run does the same way, whether it trains one seed (:mod:`.trainer`) or several in one
program (:mod:`.multiseed`): load its data, decide when to log / evaluate / checkpoint, refuse a checkpoint of
another run, and publish its summary."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fidec_gym.errors import ResultsError
from fidec_gym.eval.run.config import IDENTITY_FIELDS, TrainConfig
from fidec_gym.eval.run.scoring import reported_score
from fidec_gym.eval.store import ResultsStore, to_json
from fidec_gym.files import atomic_write_json

PROVENANCE_KEYS = ("provenance", "dataset", "path", "sha256", "format_version", "success_timing", "num_transitions")


@dataclass
class RunData:
    """A run's training data, its validation split (or why there is none) and how batches are drawn from it."""

    dataset: Any
    val_dataset: Any
    val_note: str
    sampler_kwargs: dict
    provenance: dict


def load_run_data(cfg: TrainConfig, spec) -> RunData:
    from fidec_gym.envs.datasets import DatasetError, load_dataset

    dataset = load_dataset(cfg.env_id, path=cfg.dataset_path, split="train")
    val_dataset, val_note = None, ""
    try:
        val_dataset = load_dataset(cfg.env_id, path=cfg.dataset_path, split="val")
    except (DatasetError, FileNotFoundError) as error:
        val_note = f"no validation split ({error}); validation losses not logged"
    pixel = spec.suite == "visual"  # pixel tasks: frame stacks of 3 and random crops, as the paper
    sampler_kwargs = dict(crop_augment_prob=0.5 if pixel else 0.0, frame_stack=3 if pixel else None)
    meta = dataset.metadata
    provenance = {key: meta.get(key) for key in PROVENANCE_KEYS if key in meta}
    return RunData(dataset, val_dataset, val_note, sampler_kwargs, provenance)


def owner() -> str:
    """How a running run names the process that trains it (read back to tell live runs from interrupted ones)."""
    return f"pid {os.getpid()} on {socket.gethostname()}"


def next_boundary(cfg: TrainConfig, step: int) -> int:
    """The next step at which something besides an update happens (log, eval, checkpoint, phase end)."""
    candidates = [
        cfg.total_steps,
        (step // cfg.log_interval + 1) * cfg.log_interval,
        (step // cfg.eval_interval + 1) * cfg.eval_interval,
        (step // cfg.checkpoint_interval + 1) * cfg.checkpoint_interval,
    ]
    if step < 1:
        candidates.append(1)
    if step < cfg.offline_steps:
        candidates.append(cfg.offline_steps)
    return min(candidates)


def budget_keys(*configs) -> tuple[str, ...]:
    """Agent config keys that may change when a run resumes (a budget extension). DeFlow and FiDec copy the run's
    offline budget into their config, but it acts only once an online phase starts; so when neither the saved nor
    the current run (:class:`TrainConfig` objects or their stored records) has one, it changes no update."""
    online = any(c.get("online_steps") if isinstance(c, dict) else c.online_steps for c in configs)
    return () if online else ("offline_steps",)


def check_same_run(
    checkpoint: Path, saved_config: dict, saved_overrides: dict, cfg: TrainConfig, overrides: dict
) -> None:
    """Refuse to resume from a checkpoint whose run settings or resolved agent config differ from this run's."""
    current = json.loads(to_json(cfg.record()))
    differing = {
        key: (saved_config.get(key), current.get(key))
        for key in IDENTITY_FIELDS
        if saved_config.get(key) != current.get(key)
    }
    new_agent = json.loads(to_json(overrides))
    budget = budget_keys(saved_config, current)
    differing.update(
        {
            f"agent config {key}": (saved_overrides.get(key), new_agent.get(key))
            for key in set(saved_overrides) | set(new_agent)
            if saved_overrides.get(key) != new_agent.get(key) and key not in budget
        }
    )
    if differing:
        details = "; ".join(f"{key}: checkpoint {a!r}, now {b!r}" for key, (a, b) in sorted(differing.items()))
        raise ResultsError(
            f"the checkpoint in {checkpoint} belongs to a different run ({details}); resume with the "
            "original settings, or train into another --out directory"
        )


def run_summary(
    cfg: TrainConfig,
    spec,
    seed: int,
    status: str,
    evaluations: list[dict],
    data: RunData,
    overrides: dict,
    elapsed: float,
    env_kwargs: dict,
) -> dict:
    """The summary of a finished run: the reported score by the paper's rule and the protocol it ran under."""
    summary = {
        **reported_score(evaluations, spec, cfg.offline_steps, cfg.online_steps),
        "status": status,
        "agent": cfg.agent,
        "env_id": spec.env_id,
        "seed": seed,
        "final": evaluations[-1] if evaluations else {},
        "evaluations": [{"step": e["step"], "normalized_score": e["normalized_score"]} for e in evaluations],
        "steps_done": evaluations[-1]["step"] if evaluations else 0,
        "offline_steps": cfg.offline_steps,
        "online_steps": cfg.online_steps,
        "eval_episodes": cfg.eval_episodes,
        "data_provenance": data.provenance,
        "agent_overrides": overrides,
        "wall_time_s": elapsed,
    }
    if spec.suite in ("ogbench", "visual"):
        summary["success_timing"] = env_kwargs.get("success_timing", "pre")
    if data.val_note:
        summary["note"] = data.val_note
    return summary


def publish_summary(store: ResultsStore, run_id: int, run_dir: Path, summary: dict, last_good_step: int) -> None:
    """summary.json (atomically), the store's summary and, for a finished run, its final status."""
    atomic_write_json(run_dir / "summary.json", json.loads(to_json(summary)))
    store.set_summary(run_id, summary)
    store.add_artefact(run_id, "metrics", str(run_dir / "summary.json"))
    if summary["status"] == "done":
        store.set_status(run_id, "done", last_good_step=last_good_step or None)
