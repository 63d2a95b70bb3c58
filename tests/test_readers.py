"""Readers round trips with known answers: OGBench npz, legacy D4RL hdf5, local Minari datasets and toy data."""

import re
import shutil
import warnings
import zipfile

import h5py
import numpy as np
import pytest

from fidec_gym.envs.catalogue import UnknownTaskError
from fidec_gym.envs.datasets import DatasetError, DatasetNotFoundError, load_dataset
from fidec_gym.envs.generate import generate_manipulation_dataset
from fidec_gym.envs.readers import ACTION_CLIP, sha256_file

CUBE = "fidec/cube-single-play-singletask-task2-v0"  # task 2 goal: the cube at (0.5, 0.0, 0.02)
EPISODES, STEPS = 3, 40


@pytest.fixture(autouse=True)
def isolated_data_dirs(tmp_path, monkeypatch):
    """No developer data may leak in: empty home, data dir and Minari root for every test."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FIDEC_DATA_DIR", raising=False)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))


@pytest.fixture(scope="module")
def cube_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cube")
    generate_manipulation_dataset("cube-single-play", EPISODES, directory, max_episode_steps=STEPS, progress=False)
    return directory


def copy_without_sidecar(cube_dir, target):
    for name in ("cube-single-play-v0.npz", "cube-single-play-v0-val.npz"):
        shutil.copy(cube_dir / name, target / name)
    return target / "cube-single-play-v0.npz"


def rewrite_npz(source, target, **changes):
    with np.load(source) as archive:
        arrays = {key: archive[key] for key in archive.files}
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    np.savez_compressed(target, **arrays)
    return target


# -- OGBench ------------------------------------------------------------------------------------------------------
def test_ogbench_regular_load_structure(cube_dir):
    with np.load(cube_dir / "cube-single-play-v0.npz") as raw:
        raw_observations, raw_actions = raw["observations"], raw["actions"]
    data = load_dataset(CUBE, path=cube_dir)
    n = EPISODES * (STEPS - 1)  # the last stored row of each episode is only a next observation
    assert data.num_transitions == n and data.observation_shape == (28,) and data.action_dim == 5
    rows = np.concatenate([np.arange(e * STEPS, (e + 1) * STEPS - 1) for e in range(EPISODES)])
    np.testing.assert_array_equal(data["observations"], raw_observations[rows])
    np.testing.assert_array_equal(data["next_observations"], raw_observations[rows + 1])
    ends = np.zeros(n)
    ends[STEPS - 2 :: STEPS - 1] = 1
    np.testing.assert_array_equal(data["terminals"], ends)
    np.testing.assert_array_equal(data["actions"], np.clip(raw_actions[rows], -ACTION_CLIP, ACTION_CLIP))
    expected_next = np.where(ends[:, None] == 1, data["actions"], np.roll(data["actions"], -1, axis=0))
    np.testing.assert_array_equal(data["next_actions"], expected_next)
    assert data["rewards"].max() <= 0 and set(np.unique(data["masks"])) <= {0.0, 1.0}


def test_ogbench_metadata_and_provenance(cube_dir, tmp_path):
    data = load_dataset(CUBE, path=cube_dir)
    meta = data.metadata
    assert meta["provenance"] == "generated" and meta["split"] == "train" and meta["success_timing"] == "pre"
    assert meta["sha256"] == sha256_file(cube_dir / "cube-single-play-v0.npz")
    assert meta["generator"]["num_episodes"] == EPISODES and meta["num_transitions"] == data.num_transitions
    official = copy_without_sidecar(cube_dir, tmp_path)
    assert load_dataset(CUBE, path=official).metadata["provenance"] == "official"
    # A sidecar that does not describe the file is not trusted.
    shutil.copy(cube_dir / "cube-single-play-v0.meta.json", tmp_path / "cube-single-play-v0.meta.json")
    rewrite_npz(official, official, actions=np.zeros((EPISODES * STEPS, 5), np.float32))
    with pytest.warns(UserWarning, match="checksum differs"):
        assert load_dataset(CUBE, path=tmp_path).metadata["provenance"] == "official"


def test_ogbench_matches_ogbench_own_loader(cube_dir):
    import ogbench

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, train, val = ogbench.make_env_and_datasets(
            CUBE.split("/")[1], dataset_path=str(cube_dir / "cube-single-play-v0.npz")
        )
    for split, reference in (("train", train), ("val", val)):
        data = load_dataset(CUBE, path=cube_dir, split=split)
        for key in ("observations", "next_observations", "rewards", "masks", "terminals"):
            np.testing.assert_array_equal(data[key], reference[key])


def test_ogbench_relabelling_known_answers(cube_dir, tmp_path):
    with np.load(cube_dir / "cube-single-play-v0.npz") as raw:
        qpos = raw["qpos"].copy()
    qpos[5, 14:17] = [0.5, 0.0, 0.02]  # exactly at the goal: success
    qpos[6, 14:17] = [0.5, 0.03, 0.02]  # 3 cm away: within the 4 cm tolerance
    qpos[7, 14:17] = [0.5, 0.05, 0.02]  # 5 cm away: not solved
    file = rewrite_npz(cube_dir / "cube-single-play-v0.npz", tmp_path / "cube-single-play-v0.npz", qpos=qpos)
    shutil.copy(cube_dir / "cube-single-play-v0-val.npz", tmp_path)
    data = load_dataset(CUBE, path=file)
    np.testing.assert_array_equal(data["rewards"][5:8], [0, 0, -1])
    np.testing.assert_array_equal(data["masks"][5:8], [0, 0, 1])
    # Another task of the same dataset has another goal, so the same rows are not solved there.
    other = load_dataset("fidec/cube-single-play-singletask-task1-v0", path=file)
    np.testing.assert_array_equal(other["rewards"][5:7], [-1, -1])


def test_ogbench_clips_actions(cube_dir, tmp_path):
    with np.load(cube_dir / "cube-single-play-v0.npz") as raw:
        actions = raw["actions"].copy()
    actions[0] = [1.0, -1.0, 0.5, 1.0, -1.0]
    file = rewrite_npz(cube_dir / "cube-single-play-v0.npz", tmp_path / "cube-single-play-v0.npz", actions=actions)
    shutil.copy(cube_dir / "cube-single-play-v0-val.npz", tmp_path)
    data = load_dataset(CUBE, path=file)
    np.testing.assert_allclose(data["actions"][0], [ACTION_CLIP, -ACTION_CLIP, 0.5, ACTION_CLIP, -ACTION_CLIP])


def test_ogbench_compact_and_val_and_search_order(cube_dir, tmp_path, monkeypatch):
    compact = load_dataset(CUBE, path=cube_dir, compact=True)
    assert compact.num_transitions == EPISODES * STEPS and "next_observations" not in compact
    assert compact["valids"].sum() == EPISODES * (STEPS - 1) and compact["terminals"].sum() == 2 * EPISODES
    val = load_dataset(CUBE, path=cube_dir / "cube-single-play-v0.npz", split="val")
    assert val.num_transitions == STEPS - 1 and val.metadata["path"].endswith("-val.npz")
    # $FIDEC_DATA_DIR, then data_dir before it.
    monkeypatch.setenv("FIDEC_DATA_DIR", str(cube_dir))
    assert load_dataset(CUBE).metadata["path"] == str(cube_dir / "cube-single-play-v0.npz")
    other = tmp_path / "other"
    other.mkdir()
    copy_without_sidecar(cube_dir, other)
    assert load_dataset(CUBE, data_dir=other).metadata["path"] == str(other / "cube-single-play-v0.npz")


def test_ogbench_missing_data_messages(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset(CUBE, data_dir=tmp_path)
    message = str(error.value)
    assert str(tmp_path / "cube-single-play-v0.npz") in message and ".ogbench/data" in message
    assert "fidec data generate cube-single-play --episodes 1000 --out $FIDEC_DATA_DIR" in message
    with pytest.raises(FileNotFoundError, match="fidec data generate antmaze-large-navigate .*fidec data download"):
        load_dataset("fidec/antmaze-large-navigate-singletask-v0")


def test_ogbench_download_failure_is_fast_and_clean(tmp_path, monkeypatch):
    import ogbench.utils

    # A closed local port stands in for an unreachable server; the real downloader runs.
    monkeypatch.setattr(ogbench.utils, "DATASET_URL", "http://127.0.0.1:9")
    with pytest.raises(DatasetError, match="could not download"):
        load_dataset(CUBE, data_dir=tmp_path, allow_download=True, download_timeout=2.0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate", "corrupt or truncated"),
        ("garbage", "not a readable npz"),
        ("drop_qpos", r"missing arrays \['qpos'\]"),
        ("wrong_shape", r"observations have shape \(27,\), expected \(28,\)"),
        ("nan", "observations contain NaN"),
        ("empty", "empty"),
        ("lengths", "different numbers of rows"),
        ("text", "observations holds <U1 values, not numbers"),
        ("pickled", "observations holds object values, not numbers"),
        ("scalar", r"actions has shape \(\), expected 2 dimensions"),
        ("not_npy", "'observations' is not a numpy array"),
    ],
)
def test_ogbench_bad_files(cube_dir, tmp_path, damage, message):
    source = cube_dir / "cube-single-play-v0.npz"
    target = tmp_path / "cube-single-play-v0.npz"
    with np.load(source) as raw:
        observations = raw["observations"]
    if damage == "truncate":
        target.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    elif damage == "garbage":
        target.write_bytes(b"not a zip archive at all")
    elif damage == "drop_qpos":
        rewrite_npz(source, target, qpos=None)
    elif damage == "wrong_shape":
        rewrite_npz(source, target, observations=observations[:, :27])
    elif damage == "nan":
        broken = observations.copy()
        broken[3, 2] = np.nan
        rewrite_npz(source, target, observations=broken)
    elif damage == "lengths":
        rewrite_npz(source, target, observations=observations[:-3])
    elif damage == "text":
        rewrite_npz(source, target, observations=np.array(["x"] * len(observations)))
    elif damage == "pickled":
        rewrite_npz(source, target, observations=np.array([None] * len(observations), dtype=object))
    elif damage == "scalar":
        rewrite_npz(source, target, actions=np.float32(0.5))
    elif damage == "not_npy":  # a zip archive whose entries are not .npy arrays: numpy hands back raw bytes
        with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as broken:
            for name in archive.namelist():
                broken.writestr(name, b"not an npy array")
    else:
        rewrite_npz(source, target, **{k: np.zeros((0,) + v.shape[1:], v.dtype) for k, v in np.load(source).items()})
    with pytest.raises(DatasetError, match=message) as error:
        load_dataset(CUBE, path=target)
    assert str(target) in str(error.value)


def test_bad_arguments():
    with pytest.raises(UnknownTaskError, match="Did you mean"):
        load_dataset("fidec/cube-singel-play-singletask-task2-v0")
    with pytest.raises(ValueError, match="unknown split"):
        load_dataset(CUBE, split="test")
    with pytest.raises(ValueError, match="OGBench datasets only"):
        load_dataset("fidec/toy-bimodal-v0", compact=True)


# -- D4RL hdf5 ------------------------------------------------------------------------------------------------------
def write_d4rl(path, observations, actions, rewards, terminals, timeouts=None):
    with h5py.File(path, "w") as f:
        f["observations"], f["actions"], f["rewards"], f["terminals"] = observations, actions, rewards, terminals
        if timeouts is not None:
            f["timeouts"] = timeouts
        f["infos/goal"] = np.zeros((len(observations), 2))
    return path


def ramp(n, dim):
    """Observation i is the constant vector i, so shifted rows are easy to recognise."""
    return np.repeat(np.arange(n, dtype=np.float64)[:, None], dim, axis=1)


def antmaze_file(directory, name="antmaze-umaze-v2"):
    # Episode A: rows 0-3, ends by time-out at row 3. Episode B: rows 4-6, reaches the goal at row 5.
    actions = np.tile(np.arange(7, dtype=np.float32)[:, None] / 10, (1, 8))
    actions[0, 0], actions[1, 1] = 1.5, -1.0
    return write_d4rl(
        directory / f"{name}.hdf5",
        ramp(7, 29),
        actions,
        rewards=np.array([0, 0, 0, 0, 0, 1, 1], np.float32),
        terminals=np.array([0, 0, 0, 0, 0, 1, 0], bool),
        timeouts=np.array([0, 0, 0, 1, 0, 0, 0], bool),
    )


def test_d4rl_antmaze_qlearning_view(tmp_path):
    data = load_dataset("fidec/antmaze-umaze-v2", path=antmaze_file(tmp_path))
    # Kept rows: 0, 1, 2 (row 3 timed out), 4, 5 (row 6 is the file's last row).
    np.testing.assert_array_equal(data["observations"][:, 0], [0, 1, 2, 4, 5])
    np.testing.assert_array_equal(data["next_observations"][:, 0], [1, 2, 3, 5, 6])
    np.testing.assert_array_equal(data["rewards"], [-1, -1, -1, -1, 0])  # r - 1
    np.testing.assert_array_equal(data["masks"], [1, 1, 1, 1, 0])  # 1 - terminal
    np.testing.assert_array_equal(data["terminals"], [0, 0, 1, 0, 1])  # obs[i+1] != next_obs[i], and the end
    np.testing.assert_allclose(data["actions"][0, 0], ACTION_CLIP)
    np.testing.assert_allclose(data["actions"][1, 1], -ACTION_CLIP)
    np.testing.assert_allclose(data["next_actions"][:, 2], [0.1, 0.2, 0.2, 0.5, 0.5])
    meta = data.metadata
    assert meta["provenance"] == "d4rl-hdf5" and meta["sha256"] == sha256_file(tmp_path / "antmaze-umaze-v2.hdf5")


def test_d4rl_adroit_without_timeouts_splits_by_horizon(tmp_path):
    # pen: horizon 100. Row 99 ends the first episode by time limit; a terminal at row 150 restarts the count.
    n = 205
    terminals = np.zeros(n, bool)
    terminals[150] = True
    write_d4rl(
        tmp_path / "pen-human-v1.hdf5",
        ramp(n, 45),
        np.zeros((n, 24), np.float32),
        rewards=np.arange(n, dtype=np.float32),
        terminals=terminals,
    )
    data = load_dataset("fidec/pen-human-v1", data_dir=tmp_path)
    assert data.num_transitions == n - 2  # the last row and the time-out row 99
    assert 99 not in data["observations"][:, 0] and 150 in data["observations"][:, 0]
    np.testing.assert_array_equal(data["rewards"][:3], [0, 1, 2])  # Adroit rewards are raw
    ends = np.flatnonzero(data["terminals"])
    np.testing.assert_array_equal(data["observations"][ends, 0], [98, 150, 203])  # gap, terminal, end of data
    assert data["masks"][data["observations"][:, 0] == 150] == 0
    assert data.metadata["split_by_timeouts"] is False


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate", "not a readable hdf5"),
        ("missing", r"missing datasets \['terminals'\]"),
        ("shape", r"observations have shape \(28,\), expected \(29,\)"),
        ("nan", "rewards contain NaN"),
        ("group", "'observations' is a group, not an array"),
        ("text", "'actions' holds |S1 values, not numbers"),
        ("scalar", "'rewards' is a single value"),
        ("no_rows", "it holds 0 rows"),
    ],
)
def test_d4rl_bad_files(tmp_path, damage, message):
    file = antmaze_file(tmp_path)
    if damage == "truncate":
        file.write_bytes(file.read_bytes()[:1000])
    elif damage == "missing":
        with h5py.File(file, "a") as f:
            del f["terminals"]
    elif damage == "shape":
        with h5py.File(file, "a") as f:
            del f["observations"]
            f["observations"] = ramp(7, 28)
    elif damage == "nan":
        with h5py.File(file, "a") as f:
            f["rewards"][2] = np.nan
    else:
        with h5py.File(file, "a") as f:
            if damage == "group":
                del f["observations"]
                f.create_group("observations")
            elif damage == "text":
                del f["actions"]
                f["actions"] = np.array([b"a"] * 7)
            elif damage == "scalar":
                del f["rewards"]
                f["rewards"] = np.float32(1.0)
            else:
                for key in ("observations", "actions", "rewards", "terminals", "timeouts"):
                    value = f[key][()]
                    del f[key]
                    f[key] = value[:0]
    with pytest.raises(DatasetError, match=re.escape(message) if damage in ("text",) else message) as error:
        load_dataset("fidec/antmaze-umaze-v2", path=file)
    assert str(file) in str(error.value)


def test_d4rl_has_no_val_split_and_reports_missing_data(tmp_path):
    with pytest.raises(DatasetError, match="no validation split"):
        load_dataset("fidec/antmaze-umaze-v2", split="val")
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset("fidec/door-expert-v1", data_dir=tmp_path)
    message = str(error.value)
    assert "door-expert-v1.hdf5" in message and "D4RL/door/expert-v2" in message and "minari download" in message


# -- Minari -------------------------------------------------------------------------------------------------------
def minari_antmaze(steps=(4, 3)):
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    rng = np.random.default_rng(0)
    box = lambda n: gym.spaces.Box(-np.inf, np.inf, (n,), np.float64)  # noqa: E731
    buffers, episodes = [], []
    for index, length in enumerate(steps):
        observations = {
            "observation": rng.normal(size=(length + 1, 27)),
            "achieved_goal": rng.normal(size=(length + 1, 2)),
            "desired_goal": np.zeros((length + 1, 2)),
        }
        terminations = np.zeros(length, bool)
        terminations[-1] = index == 1  # the second episode reaches the goal
        episode = dict(
            observations=observations,
            actions=rng.uniform(-1, 1, (length, 8)).astype(np.float32),
            rewards=terminations.astype(np.float64),
            terminations=terminations,
            truncations=~terminations & (np.arange(length) == length - 1),
        )
        episodes.append(episode)
        buffers.append(EpisodeBuffer(id=index, infos={}, **episode))
    minari.create_dataset_from_buffers(
        "D4RL/antmaze/umaze-v1",
        buffers,
        ref_min_score=0.0,
        ref_max_score=1.0,
        action_space=box(8),
        algorithm_name="random",
        author="fidec-gym tests",
        author_email="tests@example.org",
        code_permalink="https://example.org/fidec-gym",
        description="synthetic antmaze episodes",
        observation_space=gym.spaces.Dict({"observation": box(27), "achieved_goal": box(2), "desired_goal": box(2)}),
    )
    return episodes


@pytest.mark.filterwarnings("ignore:.*(eval_env|env_spec).*:UserWarning")
def test_minari_antmaze_conversion(tmp_path):
    episodes = minari_antmaze()
    data = load_dataset("fidec/antmaze-umaze-v2")
    flat = [
        np.concatenate([e["observations"]["achieved_goal"], e["observations"]["observation"]], axis=1) for e in episodes
    ]
    np.testing.assert_allclose(data["observations"], np.concatenate([f[:-1] for f in flat]), rtol=1e-6)
    np.testing.assert_allclose(data["next_observations"], np.concatenate([f[1:] for f in flat]), rtol=1e-6)
    np.testing.assert_array_equal(data["rewards"], [-1, -1, -1, -1, -1, -1, 0])
    np.testing.assert_array_equal(data["masks"], [1, 1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(data["terminals"], [0, 0, 0, 1, 0, 0, 1])
    np.testing.assert_array_equal(data["next_actions"][3], data["actions"][3])
    np.testing.assert_array_equal(data["next_actions"][4], data["actions"][5])
    assert data.metadata["provenance"] == "minari" and data.metadata["minari_id"] == "D4RL/antmaze/umaze-v1"
    # A legacy hdf5 file, when present, takes precedence over the Minari port.
    assert (
        load_dataset("fidec/antmaze-umaze-v2", data_dir=antmaze_file(tmp_path).parent).metadata["provenance"]
        == "d4rl-hdf5"
    )


# -- toy ----------------------------------------------------------------------------------------------------------
def test_toy_dataset_splits():
    train = load_dataset("fidec/toy-bimodal-v0")
    val = load_dataset("fidec/toy-bimodal-v0", split="val")
    assert (train.num_transitions, val.num_transitions) == (50_000, 5_000)
    assert train.metadata["provenance"] == "synthetic" and train.metadata["path"] is None
    assert train.observation_shape == (1,) and train.action_dim == 2
    np.testing.assert_array_equal(train["next_actions"], train["actions"])  # every row ends its trajectory
    assert train["masks"].sum() == 0 and train["terminals"].min() == 1
    assert np.abs(train["actions"]).max() <= ACTION_CLIP
    assert train.metadata["sha256"] == load_dataset("fidec/toy-bimodal-v0").metadata["sha256"]
    assert train.metadata["sha256"] != val.metadata["sha256"]
    assert abs(train["rewards"].mean() - 0.217) < 0.01  # the catalogue's behaviour mean Q for T1


def test_pixel_dataset_loads_as_uint8(cube_dir, tmp_path):
    """Pixel files keep uint8 observations and are relabelled like their state twin (same task goals)."""
    with np.load(cube_dir / "cube-single-play-v0.npz") as raw:
        n = len(raw["terminals"])
    images = np.random.default_rng(0).integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)
    for suffix in ("", "-val"):
        rewrite_npz(
            cube_dir / f"cube-single-play-v0{suffix}.npz",
            tmp_path / f"visual-cube-single-play-v0{suffix}.npz",
            observations=images[: n if not suffix else STEPS],
        )
    data = load_dataset("fidec/visual-cube-single-play-singletask-task2-v0", path=tmp_path)
    state = load_dataset(CUBE, path=cube_dir)
    assert data["observations"].dtype == np.uint8 and data.observation_shape == (64, 64, 3)
    np.testing.assert_array_equal(data["next_observations"][0], images[1])
    np.testing.assert_array_equal(data["rewards"], state["rewards"])
    np.testing.assert_array_equal(data["masks"], state["masks"])


def test_path_of_the_wrong_kind(cube_dir):
    with pytest.raises(DatasetError, match="reads .hdf5 files"):
        load_dataset("fidec/antmaze-umaze-v2", path=cube_dir / "cube-single-play-v0.npz")
    with pytest.raises(DatasetError, match="reads no files"):
        load_dataset("fidec/toy-saddle-v0", path=cube_dir / "cube-single-play-v0.npz")
