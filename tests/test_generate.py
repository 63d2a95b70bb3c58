"""Local OGBench data generation: layout, seeding, worker independence, scene data, bad names and Ctrl-C."""

import json
import os
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fidec_gym.cli import main
from fidec_gym.envs.datasets import load_dataset
from fidec_gym.envs.generate import (
    EpisodeGenerator,
    generate_manipulation_dataset,
    parse_play_dataset,
    scene_episode_is_healthy,
)
from fidec_gym.envs.readers import sha256_file

EPISODES, STEPS = 2, 30


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("generated")
    code = main(
        [
            "data",
            "generate",
            "cube-single-play",
            "--episodes",
            str(EPISODES),
            "--max-episode-steps",
            str(STEPS),
            "--out",
            str(out),
            "--seed",
            "7",
            "--no-progress",
        ]
    )
    assert code == 0
    return out


def read(path):
    with np.load(path) as archive:
        return {key: archive[key] for key in archive.files}


def test_official_layout_and_sidecar(generated):
    assert sorted(p.name for p in generated.iterdir()) == [
        "cube-single-play-v0-val.npz",
        "cube-single-play-v0.meta.json",
        "cube-single-play-v0.npz",
    ]
    train = read(generated / "cube-single-play-v0.npz")
    val = read(generated / "cube-single-play-v0-val.npz")
    assert set(train) == {"observations", "actions", "terminals", "qpos", "qvel"}
    assert train["observations"].shape == (EPISODES * STEPS, 28) and train["observations"].dtype == np.float32
    assert train["actions"].shape == (EPISODES * STEPS, 5) and train["actions"].dtype == np.float32
    assert train["qpos"].shape == (EPISODES * STEPS, 21) and train["qvel"].shape == (EPISODES * STEPS, 20)
    assert train["terminals"].dtype == bool
    np.testing.assert_array_equal(np.flatnonzero(train["terminals"]), [STEPS - 1, 2 * STEPS - 1])
    assert len(val["terminals"]) == STEPS  # max(1, episodes // 10) validation episodes
    assert np.abs(train["actions"]).max() <= 1.0
    # Row t + 1 holds the physics state reached from row t: the first row of each episode differs from the last.
    assert not np.allclose(train["qpos"][STEPS], train["qpos"][STEPS - 1])

    meta = json.loads((generated / "cube-single-play-v0.meta.json").read_text())
    assert meta["provenance"] == "generated" and meta["seed"] == 7 and meta["num_episodes"] == EPISODES
    assert meta["files"]["cube-single-play-v0.npz"]["sha256"] == sha256_file(generated / "cube-single-play-v0.npz")
    assert meta["files"]["cube-single-play-v0-val.npz"]["episodes"] == 1
    data = load_dataset("fidec/cube-single-play-singletask-v0", path=generated)
    assert data.metadata["provenance"] == "generated" and data.num_transitions == EPISODES * (STEPS - 1)


def test_worker_count_does_not_change_the_data(generated, tmp_path):
    generate_manipulation_dataset(
        "cube-single-play", EPISODES, tmp_path, workers=2, seed=7, max_episode_steps=STEPS, progress=False
    )
    for name in ("cube-single-play-v0.npz", "cube-single-play-v0-val.npz"):
        reference, parallel = read(generated / name), read(tmp_path / name)
        for key in reference:
            np.testing.assert_array_equal(parallel[key], reference[key])


def test_episodes_are_seeded_per_index():
    generator = EpisodeGenerator("cube-single-v0", max_episode_steps=15)
    try:
        first, again = generator.episode(seed=0, index=3), generator.episode(seed=0, index=3)
        other_index, other_seed = generator.episode(seed=0, index=4), generator.episode(seed=1, index=3)
    finally:
        generator.close()
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.allclose(first["qpos"], other_index["qpos"])
    assert not np.allclose(first["qpos"], other_seed["qpos"])


def test_scene_data_has_button_states_and_loads(tmp_path):
    train_path, _ = generate_manipulation_dataset("scene-play-v0", 1, tmp_path, max_episode_steps=12, progress=False)
    train = read(train_path)
    assert train["button_states"].dtype == np.int64 and train["button_states"].shape == (12, 2)
    assert train["observations"].shape == (12, 40) and train["qpos"].shape == (12, 25)
    data = load_dataset("fidec/scene-play-singletask-task2-v0", path=train_path)
    assert data.num_transitions == 11 and data["rewards"].min() >= -5 and data["rewards"].max() <= 0


def test_scene_health_check_known_answers():
    def qpos_with_block(y, z):
        qpos = np.zeros((3, 25), np.float32)
        qpos[:, 14:17] = [0.4, 0.0, 0.02]
        qpos[1, 15:17] = [y, z]
        return qpos

    assert scene_episode_is_healthy(qpos_with_block(0.0, 0.02))
    assert not scene_episode_is_healthy(qpos_with_block(0.29, 0.02))  # too far right
    assert scene_episode_is_healthy(qpos_with_block(-0.35, 0.07))  # left, inside the drawer
    assert not scene_episode_is_healthy(qpos_with_block(-0.35, 0.02))  # left, outside the drawer


def test_names():
    assert parse_play_dataset("cube-single-play") == ("cube-single-play-v0", "cube-single-v0", False)
    assert parse_play_dataset("visual-puzzle-3x3-play-v0") == (
        "visual-puzzle-3x3-play-v0",
        "visual-puzzle-3x3-v0",
        True,
    )
    assert parse_play_dataset("scene-play", visual=True) == ("visual-scene-play-v0", "visual-scene-v0", True)
    with pytest.raises(ValueError, match="locomotion data.*`fidec data generate antmaze-large-navigate`"):
        parse_play_dataset("antmaze-large-navigate")
    with pytest.raises(ValueError, match="only 'play'"):
        parse_play_dataset("cube-single-noisy")
    with pytest.raises(ValueError, match="not a manipulation dataset"):
        parse_play_dataset("hopper-medium")
    with pytest.raises(ValueError, match="num_episodes"):
        generate_manipulation_dataset("cube-single-play", 0, "/nonexistent")
    with pytest.raises(ValueError, match="seed must be a whole number >= 0, got -1"):
        generate_manipulation_dataset("cube-single-play", 1, "/nonexistent", seed=-1)
    assert main(["data", "generate", "humanoidmaze-medium-navigate", "--out", "/nonexistent"]) == 2


def test_ctrl_c_leaves_no_files(tmp_path):
    """A real SIGINT during a two-worker run: exit code 130, no data, no temporary files, no stray workers."""
    out = tmp_path / "out"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fidec_gym.cli",
            "data",
            "generate",
            "cube-single-play",
            "--episodes",
            "50",
            "--workers",
            "2",
            "--out",
            str(out),
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=dict(os.environ, MUJOCO_GL="egl"),
        # As a terminal's foreground job: a test run started in the background (`cmd &` in a script) passes on an
        # ignored SIGINT, which the command rightly keeps ignoring.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    output, deadline = b"", time.monotonic() + 90
    while b"generating" not in output and time.monotonic() < deadline:  # wait for the progress bar
        ready, _, _ = select.select([process.stderr], [], [], 1.0)
        if ready:
            output += os.read(process.stderr.fileno(), 4096)
    assert b"generating" in output, output.decode(errors="replace")
    time.sleep(2.0)  # let the workers start on episodes
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    process.stderr.close()
    assert not out.exists() or list(out.iterdir()) == []
