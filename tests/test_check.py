"""``check_dataset`` and ``fidec data check``: sound files pass, each kind of damage is reported."""

import json
import shutil
import zipfile

import h5py
import numpy as np
import pytest

from fidec_gym.cli import main
from fidec_gym.envs.catalogue import UnknownTaskError
from fidec_gym.envs.check import check_dataset, check_loaded, episode_lengths
from fidec_gym.envs.datasets import Dataset
from fidec_gym.envs.generate import generate_manipulation_dataset

EPISODES, STEPS = 2, 25


@pytest.fixture(scope="module")
def sound_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sound")
    generate_manipulation_dataset("cube-single-play", EPISODES, directory, max_episode_steps=STEPS, progress=False)
    return directory


@pytest.fixture
def copy(sound_dir, tmp_path):
    """A private copy of the sound files (with sidecar) that a test may damage."""
    for file in sound_dir.iterdir():
        shutil.copy(file, tmp_path / file.name)
    return tmp_path / "cube-single-play-v0.npz"


def rewrite(path, drop=(), **changes):
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files if key not in drop}
    arrays.update(changes)
    np.savez_compressed(path, **arrays)
    with np.load(path) as archive:
        return {key: archive[key] for key in archive.files}


def test_sound_file_passes(sound_dir, capsys):
    report = check_dataset(str(sound_dir / "cube-single-play-v0.npz"))
    assert report.ok, report.format()
    assert report.summary["episodes"] == EPISODES and report.summary["episode_lengths"] == [STEPS]
    assert report.summary["provenance"] == "generated"
    assert report.summary["num_transitions"] == EPISODES * (STEPS - 1)
    assert check_dataset(str(sound_dir / "cube-single-play-v0-val.npz")).ok
    assert main(["data", "check", str(sound_dir / "cube-single-play-v0.npz"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["ok"] is True and printed["problems"] == []


@pytest.mark.parametrize(
    "damage, problem",
    [
        ("misplaced_terminal", "irregular episode lengths"),
        ("nan_qpos", "qpos contains 1 NaN/Inf"),
        ("float_terminals", "terminals has dtype float32, expected bool"),
        ("drop_qpos", "missing arrays ['qpos']"),
        ("wide_actions", "actions leave [-1, 1]"),
        ("open_end", "last row is not marked"),
    ],
)
def test_damaged_files_are_reported(copy, damage, problem):
    with np.load(copy) as archive:
        terminals, qpos, actions = archive["terminals"].copy(), archive["qpos"].copy(), archive["actions"].copy()
    if damage == "misplaced_terminal":
        terminals[STEPS - 1], terminals[STEPS - 3] = False, True
        rewrite(copy, terminals=terminals)
    elif damage == "nan_qpos":
        qpos[4, 3] = np.nan
        rewrite(copy, qpos=qpos)
    elif damage == "float_terminals":
        rewrite(copy, terminals=terminals.astype(np.float32))
    elif damage == "drop_qpos":
        rewrite(copy, drop=("qpos",))
    elif damage == "wide_actions":
        actions[2, 0] = 1.7
        rewrite(copy, actions=actions)
    else:
        terminals[-1] = False
        rewrite(copy, terminals=terminals)
    report = check_dataset(str(copy))
    assert not report.ok
    assert any(problem in p for p in report.problems), report.format()
    # The file changed after generation, so the sidecar's checksum no longer matches either.
    assert any("checksum differs" in p for p in report.problems)
    assert main(["data", "check", str(copy)]) == 1


def test_unreadable_and_missing_files(copy, tmp_path, capsys):
    copy.write_bytes(copy.read_bytes()[:500])
    report = check_dataset(str(copy))
    assert not report.ok and "corrupt or truncated" in report.problems[0]
    assert main(["data", "check", str(copy)]) == 1
    assert "PROBLEMS FOUND" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError):
        check_dataset(str(tmp_path / "nothing.npz"))
    assert main(["data", "check", str(tmp_path / "nothing.npz")]) == 2
    with pytest.raises(UnknownTaskError):
        check_dataset("fidec/toy-bimodel-v0")


@pytest.mark.parametrize(
    "damage, problem",
    [
        ("text", "observations holds <U1 values, not numbers"),
        ("scalar", "actions is a single value, not one row per step"),
        ("pickled", "the array 'observations' holds Python objects"),
        ("not_npy", "the entry 'observations' is not a numpy array"),
    ],
)
def test_files_that_are_not_ogbench_arrays(copy, damage, problem, capsys):
    with np.load(copy) as archive:
        rows = len(archive["observations"])
    if damage == "text":
        rewrite(copy, observations=np.array(["x"] * rows))
    elif damage == "scalar":
        rewrite(copy, actions=np.float32(0.5))
    elif damage == "pickled":
        with np.load(copy) as archive:
            arrays = {key: archive[key] for key in archive.files}
        np.savez(copy, **dict(arrays, observations=np.array([None] * rows, dtype=object)))
    else:
        with zipfile.ZipFile(copy) as archive:
            names = archive.namelist()
        with zipfile.ZipFile(copy, "w") as broken:
            for name in names:
                broken.writestr(name, b"not an npy array")
    report = check_dataset(str(copy))
    assert any(problem in p for p in report.problems), report.format()
    assert main(["data", "check", str(copy)]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_d4rl_files_that_are_not_arrays(tmp_path):
    file = tmp_path / "antmaze-umaze-v2.hdf5"
    with h5py.File(file, "w") as f:
        for key in ("actions", "rewards", "terminals", "timeouts"):
            f[key] = np.zeros((0, 8) if key == "actions" else 0, np.float32)
        f["observations"] = np.zeros((0, 29), np.float32)
    assert check_dataset(str(file)).problems == ["no rows"]
    with h5py.File(file, "a") as f:
        del f["observations"]
        f.create_group("observations")
    assert "'observations' is a group, not an array" in check_dataset(str(file)).problems[0]


def test_task_ids(sound_dir, monkeypatch):
    report = check_dataset("fidec/toy-crescent-v0", split="val")
    assert report.ok and report.summary["num_transitions"] == 5_000
    monkeypatch.setenv("FIDEC_DATA_DIR", str(sound_dir))
    report = check_dataset("cube-single-play-singletask-task3-v0")
    assert report.ok, report.format()
    assert report.summary["path"] == str(sound_dir / "cube-single-play-v0.npz")
    monkeypatch.setenv("FIDEC_DATA_DIR", str(sound_dir / "empty"))
    monkeypatch.setenv("HOME", str(sound_dir / "home"))
    missing = check_dataset("fidec/puzzle-3x3-play-singletask-v0")
    assert not missing.ok and "fidec data generate puzzle-3x3-play" in missing.problems[0]


def test_d4rl_files(tmp_path):
    n = 12
    file = tmp_path / "antmaze-medium-play-v2.hdf5"
    timeouts = np.zeros(n, bool)
    timeouts[5] = timeouts[-1] = True
    with h5py.File(file, "w") as f:
        f["observations"] = np.random.default_rng(0).normal(size=(n, 29))
        f["actions"] = np.zeros((n, 8), np.float32)
        f["rewards"] = np.zeros(n, np.float32)
        f["terminals"] = np.zeros(n, bool)
        f["timeouts"] = timeouts
    report = check_dataset(str(file))
    assert report.ok, report.format()
    assert report.summary["episode_lengths"] == [6] and report.summary["num_transitions"] == n - 2
    with h5py.File(file, "a") as f:
        f["rewards"][3] = np.inf
    assert any("rewards contains 1 NaN/Inf" in p for p in check_dataset(str(file)).problems)


def test_mislabelled_trajectory_ends_are_found():
    observations = np.arange(6, dtype=np.float32)[:, None]
    next_observations = observations + 1
    next_observations[2] = 10.0  # a jump: row 3 starts another trajectory
    arrays = {
        "observations": observations,
        "next_observations": next_observations,
        "actions": np.zeros((6, 1), np.float32),
        "next_actions": np.zeros((6, 1), np.float32),
        "rewards": np.zeros(6, np.float32),
        "masks": np.ones(6, np.float32),
        "terminals": np.array([0, 0, 1, 0, 0, 1], np.float32),
    }
    assert check_loaded(Dataset(arrays)).ok
    arrays["terminals"] = np.array([0, 0, 0, 0, 0, 1], np.float32)
    report = check_loaded(Dataset(arrays))
    assert any("1 next observations differ" in p for p in report.problems)
    np.testing.assert_array_equal(episode_lengths(np.array([0, 0, 1, 0, 1])), [3, 2])


def test_data_info_and_download_arguments(capsys):
    assert main(["data", "info", "fidec/toy-five-lobes-v0", "--split", "val"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_transitions"] == 5_000 and info["provenance"] == "synthetic" and info["split"] == "val"
    # Argument errors are caught before any network access.
    assert main(["data", "download", "fidec/antmaze-umaze-v2"]) == 2
    assert main(["data", "download", "antmaze-huge-navigate-v0"]) == 2
    assert "unknown OGBench dataset" in capsys.readouterr().err
    assert main(["data", "download", "cube-single-play-v0", "--timeout", "-1"]) == 2
    assert "timeout must be a number of seconds > 0, got -1.0" in capsys.readouterr().err
