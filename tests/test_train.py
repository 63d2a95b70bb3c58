"""Training loop end to end on a toy task, the reporting rule, NaN handling, online fine-tuning, loggers."""

from __future__ import annotations

import dataclasses
import json
import math
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from fidec_gym import agents
from fidec_gym.agents.bc import BCAgent
from fidec_gym.envs.catalogue import task_info
from fidec_gym.eval.run.checkpoint import list_checkpoints, load_trainer_state
from fidec_gym.eval.run.config import TrainConfig
from fidec_gym.eval.run.loggers import CsvLogger, MissingDependencyError, TensorBoardLogger, read_metrics_csv
from fidec_gym.eval.run.scoring import reported_score
from fidec_gym.eval.run.trainer import train
from fidec_gym.eval.store import ResultsStore

TOY = "fidec/toy-bimodal-v0"
SMALL = {"actor_hidden_dims": (64, 64), "batch_size": 64}


def _config(out_dir, **changes) -> TrainConfig:
    base = TrainConfig(
        agent="bc",
        env_id=TOY,
        seed=0,
        offline_steps=120,
        eval_interval=50,
        eval_episodes=8,
        log_interval=40,
        checkpoint_interval=60,
        agent_overrides=dict(SMALL),
        results_dir=str(out_dir),
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    store = ResultsStore(out)
    result = train(_config(out), store=store, progress=False)
    return out, store, result


def test_toy_run_end_to_end(toy_run):
    out, store, result = toy_run
    assert result.status == "done"
    run = store.runs()[0]
    assert run["status"] == "done" and run["last_good_step"] == 120
    assert run["data_provenance"]["provenance"] == "synthetic"
    # Evaluations at step 1, every 50 steps and at the last step.
    evaluations = store.evaluations(run["id"])
    assert [e["step"] for e in evaluations] == [1, 50, 100, 120]
    assert all(e["metrics"]["num_episodes"] == 8 for e in evaluations)
    # Toy rule: the last evaluation, stated in the summary; summary.json and the store agree.
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["score"] == pytest.approx(evaluations[-1]["metrics"]["normalized_score"])
    assert summary["score_rule"] == "the last evaluation, at step 120"
    assert run["summary"]["score"] == pytest.approx(summary["score"])
    assert summary["agent_overrides"]["actor_hidden_dims"] == [64, 64]
    # Metrics: one CSV row per log/eval step with training and validation losses.
    rows = read_metrics_csv(result.run_dir / "metrics.csv")
    logged = [r["step"] for r in rows if "train/actor/loss" in r]
    assert logged == [40, 80, 120] and all("val/actor/loss" in r for r in rows if "train/actor/loss" in r)
    # Only the newest checkpoint is kept, and it is registered with the run.
    assert [step for step, _ in list_checkpoints(result.run_dir)] == [60, 120]
    kinds = {a["kind"] for a in store.artefacts(run["id"])}
    assert kinds == {"checkpoint", "metrics"}
    # The returned agent is the checkpointed one.
    saved = agents.load_agent(str(list_checkpoints(result.run_dir)[-1][1] / "agent.msgpack"))
    np.testing.assert_array_equal(np.asarray(saved.network.step), np.asarray(result.agent.network.step))


def test_resume_refuses_a_different_config_and_silent_overwrites(toy_run):
    out, store, _ = toy_run
    with pytest.raises(ValueError, match="already holds a run"):
        train(_config(out), store=store, resume=False, progress=False)
    changed = _config(out, agent_overrides={**SMALL, "lr": 1e-3}, offline_steps=180)
    with pytest.raises(ValueError, match="agent_overrides"):
        train(changed, store=store, resume=True, progress=False)
    run = store.runs()[0]
    assert [e["step"] for e in store.evaluations(run["id"])][-1] == 120  # nothing was touched
    assert run["config"]["offline_steps"] == 120 and run["status"] == "done"


def test_bad_inputs_are_clear(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="valid agents"):
        train(_config(tmp_path, agent="bcx"), progress=False)
    with pytest.raises(KeyError, match="Did you mean"):
        train(_config(tmp_path, env_id="fidec/toy-bimodl-v0"), progress=False)
    with pytest.raises(KeyError, match="unknown config key"):
        train(_config(tmp_path, agent_overrides={"widths": 3}), progress=False)
    with pytest.raises(ValueError, match="nothing to train"):
        train(_config(tmp_path, offline_steps=0), progress=False)
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    with pytest.raises(MissingDependencyError, match=r'pip install "fidec-gym\[logging\]"'):
        train(_config(tmp_path, wandb=True), progress=False)
    assert not any(tmp_path.iterdir())  # nothing half-written


class ExplodingBC(BCAgent):
    """BC whose loss turns NaN from update 6 on (a diverging run)."""

    def total_loss(self, batch, grad_params, rng):
        loss, info = super().total_loss(batch, grad_params, rng)
        return loss * jnp.where(self.network.step > 5, jnp.nan, 1.0), info


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setitem(agents.AGENTS, "bc", ExplodingBC)
    store = ResultsStore(tmp_path)
    cfg = _config(tmp_path, offline_steps=50, checkpoint_interval=4, eval_interval=100, log_interval=100)
    result = train(cfg, store=store, progress=False)
    assert result.status == "failed"
    run = store.runs()[0]
    assert run["status"] == "failed" and run["last_good_step"] == 4
    assert "non-finite" in run["message"] and "step 6" in run["message"]
    checkpoints = list_checkpoints(result.run_dir)
    assert [step for step, _ in checkpoints] == [4]
    kept = agents.load_agent(str(checkpoints[0][1] / "agent.msgpack"))
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax_leaves(kept.network.params))
    # The returned agent is the last finite state (before the failing update).
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax_leaves(result.agent.network.params))
    assert json.loads((result.run_dir / "summary.json").read_text())["status"] == "failed"


def jax_leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)


def test_offline_to_online_and_online_resume(tmp_path):
    store = ResultsStore(tmp_path)
    cfg = _config(
        tmp_path, offline_steps=30, online_steps=20, eval_interval=100, log_interval=10, checkpoint_interval=25
    )
    result = train(cfg, store=store, progress=False)
    assert result.status == "done"
    steps = [e["step"] for e in store.evaluations(store.runs()[0]["id"])]
    assert steps == [1, 30, 50]  # step 1, end of offline, end of online
    summary = result.summary
    assert summary["score_steps"] == [30, 50]
    assert summary["score_offline"] == pytest.approx(store.evaluations()[1]["metrics"]["normalized_score"])
    state = load_trainer_state(list_checkpoints(result.run_dir)[-1][1])
    assert state["replay"]["num_online"] == 20  # one transition per online step
    rows = read_metrics_csv(result.run_dir / "metrics.csv")
    assert sum("online/return" in r for r in rows) == 20  # toy episodes last one step
    # Extending the online phase resumes from the checkpoint with the replay contents restored.
    longer = train(dataclasses.replace(cfg, online_steps=30), store=store, progress=False)
    state = load_trainer_state(list_checkpoints(longer.run_dir)[-1][1])
    assert state["step"] == 60 and state["replay"]["num_online"] == 30


def test_reporting_rule_on_a_hand_made_history():
    ogbench = task_info("fidec/cube-single-play-singletask-task2-v0")
    history = [
        {"step": s, "normalized_score": v}
        for s, v in [(1, 0.0), (100_000, 10.0), (700_000, 50.0), (800_000, 60.0), (900_000, 70.0), (1_000_000, 95.0)]
    ]
    score = reported_score(history[::-1], ogbench, 1_000_000)  # order does not matter
    assert score["score"] == pytest.approx(75.0) and score["score_steps"] == [800_000, 900_000, 1_000_000]
    assert score["protocol_matches_paper"] and "800K/900K/1M" in score["score_rule"]
    # A shorter run: the same rule on its own last three evaluations; step 1 only counts when alone.
    short = reported_score(history[:3], ogbench, 700_000)
    assert short["score"] == pytest.approx(30.0) and not short["protocol_matches_paper"]
    assert reported_score(history[:1], ogbench, 1)["score"] == 0.0
    visual = task_info("fidec/visual-cube-single-play-singletask-task1-v0")
    pixel = [{"step": s, "normalized_score": float(s // 100_000)} for s in (1, 300_000, 400_000, 500_000)]
    assert reported_score(pixel, visual, 500_000)["score"] == pytest.approx(4.0)
    assert reported_score(pixel, visual, 500_000)["protocol_matches_paper"]
    d4rl = task_info("fidec/antmaze-large-play-v2")
    last = reported_score(
        [{"step": 400_000, "normalized_score": 10.0}, {"step": 500_000, "normalized_score": 80.0}], d4rl, 500_000
    )
    assert last["score"] == 80.0 and last["protocol_matches_paper"]
    online = reported_score(
        [
            {"step": 1_000_000, "normalized_score": 40.0},
            {"step": 2_000_000, "normalized_score": 90.0},
            {"step": 1_500_000, "normalized_score": 70.0},
        ],
        ogbench,
        1_000_000,
        1_000_000,
    )
    assert (online["score_offline"], online["score_online"], online["score"]) == (40.0, 90.0, 90.0)
    assert online["protocol_matches_paper"]
    assert math.isnan(reported_score([], ogbench, 10)["score"])


def test_csv_logger_appends_after_resume_and_widens(tmp_path):
    path = tmp_path / "metrics.csv"
    logger = CsvLogger(path)
    logger.log(10, {"loss": 1.0})
    logger.log(20, {"loss": 0.5, "eval/score": 3.0})  # a new column rewrites the header once
    logger.log(30, {"loss": 0.25})
    resumed = CsvLogger(path, resume_step=20)  # steps after the checkpoint are dropped, then re-logged
    resumed.log(30, {"loss": 0.3})
    assert read_metrics_csv(path) == [
        {"step": 10.0, "loss": 1.0},
        {"step": 20.0, "loss": 0.5, "eval/score": 3.0},
        {"step": 30.0, "loss": 0.3},
    ]


def test_tensorboard_logger_and_missing_package_message(tmp_path, monkeypatch):
    logger = TensorBoardLogger(tmp_path / "tb")
    logger.log(5, {"train/loss": np.float32(0.5), "note": "text is skipped"})
    logger.close()
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if the package were not installed
    with pytest.raises(MissingDependencyError, match=r'pip install "fidec-gym\[logging\]"'):
        TensorBoardLogger(tmp_path / "tb2")


def test_wandb_logger_writes_an_offline_run(tmp_path, monkeypatch):
    from fidec_gym.eval.run.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(tmp_path, name="bc-toy", config={"seed": 0}, run_id="bc-toy-1")
    logger.log(10, {"train/loss": 0.5, "note": "text is skipped"})
    logger.close()
    runs = list((tmp_path / "wandb").glob("offline-run-*-bc-toy-1"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_offline_steps_reach_the_flow_agents_config():
    from fidec_gym.eval.run.config import resolve_agent_overrides

    cfg = TrainConfig(agent="deflow", env_id="fidec/toy-bimodal-v0", offline_steps=321, online_steps=50)
    assert resolve_agent_overrides(cfg)["offline_steps"] == 321  # fix_bc_flow_online switches at this step
    assert "offline_steps" not in resolve_agent_overrides(TrainConfig(agent="bc", env_id="fidec/toy-bimodal-v0"))
