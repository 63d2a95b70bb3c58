"""The cpu-reference preset cannot rot: its first cell, with every setting the
preset gives it, trains for a handful of updates on a tiny dataset made by the same generator."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fidec_gym.envs.generate import generate_manipulation_dataset
from fidec_gym.eval.grid.presets import load_preset, train_config
from fidec_gym.eval.run.multiseed import train_seeds
from fidec_gym.eval.store import ResultsStore


def test_the_first_cell_trains(tmp_path):
    preset = load_preset("cpu-reference")
    assert sorted(preset.agents) == sorted(["bc", "iql", "rebrac", "fql", "deflow", "fidec", "fidec-official"])
    assert len(preset.seeds) >= 3
    assert preset.datasets["cube-single-play-v0"]["generate"]["episodes"] == 1000
    generate_manipulation_dataset("cube-single-play", 2, tmp_path / "data", max_episode_steps=40, progress=False)
    cell = preset.cells(tmp_path / "data")[0]
    config = train_config(cell, cell.seeds[0], tmp_path / "out")
    assert config.agent_overrides["actor_hidden_dims"] == [256, 256] and config.offline_steps == 100_000
    # cube-single went on to 100K updates; antmaze-large keeps the preset's 50K.
    budgets = {(c.env_id.split("-")[0], c.settings["offline_steps"]) for c in preset.cells()}
    assert budgets == {("fidec/cube", 100_000), ("fidec/antmaze", 50_000)}
    # The preset's own settings, with the budget cut to a handful of updates and evaluation episodes.
    # One short video per seed at the end, as a leaderboard cell records it.
    config = dataclasses.replace(
        config,
        offline_steps=6,
        eval_interval=3,
        eval_episodes=2,
        log_interval=3,
        checkpoint_interval=3,
        eval_workers=1,
        video_episodes=1,
        video_frame_skip=2,
    )
    short = {"max_episode_steps": 3}
    results = train_seeds(config, cell.seeds, progress=False, updates_per_call=3, env_kwargs=short)
    assert [result.status for result in results] == ["done"] * len(cell.seeds)
    store = ResultsStore(tmp_path / "out")
    for run, result in zip(store.runs(), results):
        assert [e["step"] for e in store.evaluations(run["id"])] == [1, 3, 6]
        videos = [a["path"] for a in store.artefacts(run_id=run["id"]) if a["kind"] == "video"]
        assert videos == result.summary["videos"] and len(videos) == 1
        assert videos[0].endswith(f"_seed{run['seed']}_step6_ep0.mp4") and Path(videos[0]).stat().st_size > 0
        assert run["summary"]["data_provenance"]["provenance"] == "generated"
        assert run["summary"]["agent_overrides"]["actor_hidden_dims"] == [256, 256]
