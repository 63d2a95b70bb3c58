"""kill -9 during `fidec train`, then `--resume`: the final state equals an uninterrupted run's, bit for bit."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from fidec_gym.agents.base import read_checkpoint
from fidec_gym.cli import main
from fidec_gym.eval.run.checkpoint import CheckpointError, list_checkpoints, load_trainer_state
from fidec_gym.eval.run.loggers import read_metrics_csv
from fidec_gym.eval.run.trainer import TrainerState
from fidec_gym.eval.store import ResultsStore

TOY = "fidec/toy-saddle-v0"
RUN_NAME = "bc__toy-saddle-v0__seed1"
TOTAL = 600
COMMON = [
    "--agent",
    "bc",
    "--env",
    TOY,
    "--seed",
    "1",
    "--eval-interval",
    "100000",
    "--eval-episodes",
    "4",
    "--log-interval",
    "100",
    "--checkpoint-interval",
    "200",
    "--updates-per-dispatch",
    "4",
    "--set",
    "actor_hidden_dims=[64,64]",
    "--set",
    "batch_size=64",
    "--no-progress",
]


def _train_command(out, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fidec_gym.cli", "train", *COMMON, "--steps", str(steps), "--out", str(out), *extra]


def _environment() -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run and a run killed with SIGKILL after its first checkpoint, then resumed."""
    reference, killed = tmp_path_factory.mktemp("reference"), tmp_path_factory.mktemp("killed")
    # The reference runs while the other one is being killed (two cores).
    reference_process = subprocess.Popen(
        _train_command(reference, TOTAL),
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # A practically endless run, killed as soon as its first checkpoint exists.
    victim = subprocess.Popen(
        _train_command(killed, 10**9), env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    run_dir = killed / "runs" / RUN_NAME
    deadline = time.monotonic() + 180
    while not list_checkpoints(run_dir):
        assert victim.poll() is None, "the training process ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 180 s"
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(30)
    killed_at = list_checkpoints(run_dir)[-1][0]
    assert killed_at < TOTAL
    resumed = subprocess.run(
        _train_command(killed, TOTAL, "--resume"), env=_environment(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    output, _ = reference_process.communicate(timeout=300)
    assert reference_process.returncode == 0, output
    return reference, killed, killed_at


def _final_state(out):
    run_dir = out / "runs" / RUN_NAME
    step, checkpoint = list_checkpoints(run_dir)[-1]
    return step, read_checkpoint(checkpoint / "agent.msgpack")["state"]


def test_resumed_parameters_equal_the_uninterrupted_run(runs):
    reference, killed, killed_at = runs
    assert killed_at in (200, 400)
    (step_a, state_a), (step_b, state_b) = _final_state(reference), _final_state(killed)
    assert step_a == step_b == TOTAL
    leaves_a, tree_a = jax.tree_util.tree_flatten(state_a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(state_b)
    assert tree_a == tree_b
    for a, b in zip(leaves_a, leaves_b):  # params, Adam state, agent RNG and step: bitwise equal
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_resumed_logs_and_store_read_as_one_run(runs):
    reference, killed, _ = runs
    rows_a = read_metrics_csv(reference / "runs" / RUN_NAME / "metrics.csv")
    rows_b = read_metrics_csv(killed / "runs" / RUN_NAME / "metrics.csv")
    assert [r["step"] for r in rows_b] == [r["step"] for r in rows_a]  # every step once, in order
    deterministic = [k for k in rows_a[-1] if k.startswith(("train/", "val/", "eval/"))]
    assert deterministic
    for a, b in zip(rows_a, rows_b):
        for key in deterministic:  # NaN (e.g. toy success) compares equal to NaN here
            np.testing.assert_array_equal(a.get(key, np.nan), b.get(key, np.nan), err_msg=f"{key} at {a['step']}")
    store_a, store_b = ResultsStore(reference), ResultsStore(killed)
    run_a, run_b = store_a.runs()[0], store_b.runs()[0]
    assert run_b["status"] == "done" and run_b["last_good_step"] == TOTAL
    assert [e["step"] for e in store_b.evaluations()] == [1, TOTAL]
    assert [e["metrics"] for e in store_b.evaluations()] == [e["metrics"] for e in store_a.evaluations()]
    assert run_b["summary"]["score"] == run_a["summary"]["score"]


def test_cli_eval_and_checkpoint_mismatches(runs, capsys):
    reference, _, _ = runs
    run_dir = reference / "runs" / RUN_NAME
    assert main(["eval", "--checkpoint", str(run_dir), "--env", TOY, "--episodes", "4", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "normalized_score" in printed and "4 episodes" in printed
    # An agent trained on a toy task cannot act in cube-single (different spaces).
    assert main(["eval", "--checkpoint", str(run_dir), "--env", "fidec/cube-single-play-singletask-v0"]) == 2
    assert "cannot act in" in capsys.readouterr().err
    # Resuming with another agent config is refused with the differing key, and nothing changes.
    before = _final_state(reference)[0]
    argv = ["train", *COMMON, "--steps", str(TOTAL), "--out", str(reference), "--resume", "--set", "lr=0.001"]
    assert main(argv) == 2
    assert "lr" in capsys.readouterr().err
    assert _final_state(reference)[0] == before
    # Videos are refused for toy tasks with a clear message.
    assert main(["record", "--checkpoint", str(run_dir), "--env", TOY]) == 2
    assert "no video" in capsys.readouterr().err
    # Bad evaluation and recording settings are named before the checkpoint is loaded.
    for flags, message in [
        (["--episodes", "0"], "num_episodes (--episodes) must be a whole number >= 1, got 0"),
        (["--workers", "0"], "num_workers (--workers) must be a whole number >= 1, got 0"),
        (["--temperature", "nan"], "temperature (--temperature) must be a finite number >= 0, got nan"),
        (["--temperature", "-1"], "temperature (--temperature) must be a finite number >= 0, got -1.0"),
        (["--videos", "-1"], "video_episodes (--videos) must be a whole number >= 0, got -1"),
    ]:
        assert main(["eval", "--checkpoint", str(run_dir), "--env", TOY, *flags]) == 2
        assert message in capsys.readouterr().err
    cube = "fidec/cube-single-play-singletask-v0"
    for flags, message in [(["--size", "0"], "size (--size)"), (["--max-steps", "0"], "max_episode_steps")]:
        assert main(["record", "--checkpoint", str(run_dir), "--env", cube, *flags]) == 2
        assert message in capsys.readouterr().err


def test_damaged_or_empty_resume(runs, tmp_path, capsys):
    reference, _, _ = runs
    # A trainer state that lacks keys is named as incomplete (it was a TypeError from the dataclass).
    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    checkpoints = sorted((copy / "runs" / RUN_NAME / "checkpoints").glob("step_*"))
    for checkpoint in checkpoints:
        (checkpoint / "trainer.pkl").write_bytes(pickle.dumps({"format_version": 1, "step": 1}))
    argv = ["train", *COMMON, "--steps", str(TOTAL + 2), "--out", str(copy), "--resume"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "trainer.pkl is incomplete (no train_config" in err and "Traceback" not in err
    with pytest.raises(CheckpointError, match="is incomplete"):
        load_trainer_state(checkpoints[-1], TrainerState.field_names())
    # --resume where nothing was saved starts a new run and says so.
    fresh = tmp_path / "fresh"
    assert main(["train", *COMMON, "--steps", "2", "--out", str(fresh), "--resume"]) == 0
    assert "--resume: no checkpoint in" in capsys.readouterr().err
