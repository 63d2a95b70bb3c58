"""Several seeds in one compiled program (eval/run/multiseed.py): each seed equals itself trained alone, a stacked run
resumes exactly after kill -9, and one diverging seed does not stop the others."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from fidec_gym.agents.base import read_checkpoint
from fidec_gym.errors import ConfigError
from fidec_gym.eval.run import multiseed
from fidec_gym.eval.run.checkpoint import list_checkpoints
from fidec_gym.eval.run.config import TrainConfig
from fidec_gym.eval.run.vmapped import parse_seeds
from fidec_gym.eval.store import ResultsStore

TOY = "fidec/toy-saddle-v0"
SMALL = {"actor_hidden_dims": [32, 32], "value_hidden_dims": [32, 32], "batch_size": 32}


def _config(out, agent="fql", **changes) -> TrainConfig:
    overrides = dict(SMALL) if agent != "bc" else {"actor_hidden_dims": [32, 32], "batch_size": 32}
    base = TrainConfig(
        agent=agent,
        env_id=TOY,
        offline_steps=40,
        eval_interval=20,
        eval_episodes=4,
        log_interval=20,
        checkpoint_interval=20,
        agent_overrides=overrides,
        results_dir=str(out),
    )
    return dataclasses.replace(base, **changes)


def _max_difference(a, b) -> float:
    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))) for x, y in pairs)


def test_bad_seed_lists_and_bench_seeds_arguments(tmp_path, capsys):
    from fidec_gym.cli import main

    cfg = TrainConfig(agent="bc", env_id=TOY, offline_steps=2, results_dir=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="seeds is empty"):
        multiseed.train_seeds(cfg, [], progress=False)
    with pytest.raises(ConfigError, match=r"seeds contain duplicates: \[0, 0\]"):
        multiseed.train_seeds(cfg, [0, 0], progress=False)
    assert not (tmp_path / "out").exists()
    for flags, message in [
        (["--seeds", "a,b"], "--seeds 'a,b': give comma-separated seed counts"),
        (["--seeds", "0"], "every seed count must be at least 1"),
        (["--agents", "fqll"], "unknown agent(s) ['fqll']"),
        (["--updates-per-call", "0"], "--updates-per-call must be at least 1, got 0"),
        (["--calls", "0"], "--calls must be at least 1, got 0"),
        (["--rounds", "0"], "--rounds must be at least 1, got 0"),
    ]:
        assert main(["bench", "seeds", "--out", str(tmp_path / "bench"), *flags]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bench").exists()


def test_parse_seeds():
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("4,7") == [4, 7]
    for bad in ("0,0", "-1", "x", "0"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


def test_a_seed_group_policy_acts_as_each_seeds_own_policy():
    """One call for the group gives every seed the actions its one-seed evaluation policy gives, call after call: the
    same key chain (split inside the compiled call) and the same agent."""
    from fidec_gym.agents import agent_class
    from fidec_gym.agents.seeds import create_vmapped, unstack_agents
    from fidec_gym.eval.run.evaluate import make_policy
    from fidec_gym.eval.run.vmapped import grouped_policy

    example = {key: np.zeros((1, 2), np.float32) for key in ("observations", "actions", "next_observations")}
    example.update({key: np.zeros((1,), np.float32) for key in ("rewards", "masks", "terminals")})
    small = {"actor_hidden_dims": (16,), "value_hidden_dims": (16,)}
    agents = create_vmapped(agent_class("fql"), [0, 1], example, small)
    seeds, width = [5, 1_000_008], 3
    group = grouped_policy(agents, seeds, width)
    alone = [make_policy(agent, seed) for agent, seed in zip(unstack_agents(agents), seeds)]
    observations = np.random.default_rng(0).normal(size=(4, len(seeds) * width, 2)).astype(np.float32)
    for step in observations:
        expected = np.concatenate([policy(step[i * width : (i + 1) * width]) for i, policy in enumerate(alone)])
        np.testing.assert_allclose(group(step), expected, atol=1e-5)
    assert not np.allclose(group(observations[0])[:width], group(observations[0])[:width])  # fresh keys per call


@pytest.mark.parametrize("sampling", ["device", "host"])
def test_a_vmapped_seed_equals_the_seed_trained_alone(tmp_path, sampling):
    together = multiseed.train_seeds(
        _config(tmp_path / "together"), [0, 1, 2], progress=False, updates_per_call=8, sampling=sampling
    )
    alone = multiseed.train_seeds(
        _config(tmp_path / "alone"), [1], progress=False, updates_per_call=8, sampling=sampling
    )
    assert [r.status for r in together] == ["done"] * 3
    # Same parameters after 40 updates, up to float reassociation under vmap; other seeds differ.
    assert _max_difference(together[1].agent.network.params, alone[0].agent.network.params) < 1e-4
    assert _max_difference(together[0].agent.network.params, alone[0].agent.network.params) > 1e-2
    # Per-seed rows in the store exactly as one-seed runs write them: evaluations at 1, 20, 40 and a summary.
    store = ResultsStore(tmp_path / "together")
    runs = sorted(store.runs(), key=lambda run: run["seed"])
    assert [run["seed"] for run in runs] == [0, 1, 2] and all(run["status"] == "done" for run in runs)
    for run in runs:
        assert [e["step"] for e in store.evaluations(run["id"])] == [1, 20, 40]
        assert all(e["metrics"]["num_episodes"] == 4 for e in store.evaluations(run["id"]))
        assert run["summary"]["score_rule"] == "the last evaluation, at step 40"
    assert together[1].summary["score"] == pytest.approx(alone[0].summary["score"], abs=1e-3)


def test_one_diverging_seed_does_not_stop_the_others(tmp_path, monkeypatch):
    from fidec_gym.agents import seeds as seed_module

    create = seed_module.create_vmapped

    def poisoned(*args, **kwargs):  # seed index 1 starts from NaN parameters
        agents = create(*args, **kwargs)
        params = jax.tree_util.tree_map(lambda leaf: leaf.at[1].set(np.nan), agents.network.params)
        return agents.replace(network=agents.network.replace(params=params))

    monkeypatch.setattr(seed_module, "create_vmapped", poisoned)
    results = multiseed.train_seeds(_config(tmp_path, agent="bc"), [0, 1, 2], progress=False, updates_per_call=5)
    assert [r.status for r in results] == ["done", "failed", "done"]
    assert "non-finite" in results[1].summary["message"] and "other seeds go on" in results[1].summary["message"]
    store = ResultsStore(tmp_path)
    statuses = {run["seed"]: run["status"] for run in store.runs()}
    assert statuses == {0: "done", 1: "failed", 2: "done"}
    assert not list_checkpoints(results[1].run_dir)  # nothing non-finite is ever checkpointed


def _command(out, steps: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fidec_gym.cli",
        "train",
        "--agent",
        "bc",
        "--env",
        TOY,
        "--seeds",
        "0,1",
        "--steps",
        str(steps),
        "--eval-interval",
        "1000000",
        "--eval-episodes",
        "2",
        "--log-interval",
        "100",
        "--checkpoint-interval",
        "200",
        "--updates-per-call",
        "20",
        "--set",
        "actor_hidden_dims=[32,32]",
        "--set",
        "batch_size=32",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]


def test_a_stacked_run_resumes_exactly_after_kill_9(tmp_path):
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    total = 600
    reference = subprocess.Popen(
        _command(tmp_path / "reference", total),
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    victim = subprocess.Popen(
        _command(tmp_path / "killed", 10**9), env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    run_dirs = [tmp_path / "killed" / "runs" / f"bc__toy-saddle-v0__seed{seed}" for seed in (0, 1)]
    deadline = time.monotonic() + 180
    while not all(list_checkpoints(run_dir) for run_dir in run_dirs):
        assert victim.poll() is None and time.monotonic() < deadline, "no checkpoint of both seeds in time"
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(30)
    resumed = subprocess.run(
        _command(tmp_path / "killed", total, "--resume"), env=environment, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    output, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, output
    for seed in (0, 1):
        states = []
        for out in ("reference", "killed"):
            step, checkpoint = list_checkpoints(tmp_path / out / "runs" / f"bc__toy-saddle-v0__seed{seed}")[-1]
            assert step == total
            states.append(read_checkpoint(checkpoint / "agent.msgpack")["state"])
        for a, b in zip(jax.tree_util.tree_leaves(states[0]), jax.tree_util.tree_leaves(states[1])):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
