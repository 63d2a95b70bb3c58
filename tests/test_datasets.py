"""Dataset container, batch sampler (resume, crop augmentation, frame stacking) and replay buffer."""

import numpy as np
import pytest

from fidec_gym.envs.datasets import BatchSampler, Dataset, DatasetError, random_crop
from fidec_gym.envs.readers import next_actions_within_trajectories, sha256_arrays, trajectory_starts
from fidec_gym.envs.replay_buffer import ReplayBuffer


def make_arrays(n=10, obs_dim=3, act_dim=2, episode_length=5, seed=0):
    rng = np.random.default_rng(seed)
    observations = rng.normal(size=(n + 1, obs_dim)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32)
    terminals = np.zeros(n, np.float32)
    terminals[episode_length - 1 :: episode_length] = 1.0
    terminals[-1] = 1.0
    return {
        "observations": observations[:-1],
        "actions": actions,
        "rewards": np.arange(n, dtype=np.float32),
        "masks": np.ones(n, np.float32),
        "terminals": terminals,
        "next_observations": observations[1:],
        "next_actions": next_actions_within_trajectories(actions, terminals),
    }


def pixel_dataset(trajectory_lengths=(3, 4), size=64):
    """Images whose channels encode (row, column, row index) so crops and stacks can be read back."""
    n = sum(trajectory_lengths)
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    images = np.zeros((n + 1, size, size, 3), np.uint8)
    images[..., 0], images[..., 1] = rows, cols
    images[..., 2] = np.arange(n + 1)[:, None, None]
    terminals = np.zeros(n, np.float32)
    terminals[np.cumsum(trajectory_lengths) - 1] = 1.0
    actions = np.zeros((n, 2), np.float32)
    return Dataset(
        {
            "observations": images[:-1],
            "next_observations": images[1:],
            "actions": actions,
            "next_actions": actions,
            "rewards": np.zeros(n, np.float32),
            "masks": np.ones(n, np.float32),
            "terminals": terminals,
        },
        {"env_id": None},
    )


# -- Dataset ------------------------------------------------------------------------------------------------------
def test_dataset_mapping_and_properties():
    dataset = Dataset(make_arrays(), {"env_id": None, "split": "train"})
    assert len(dataset) == dataset.num_transitions == dataset.metadata["num_transitions"] == 10
    assert set(dataset.keys()) == {
        "observations",
        "actions",
        "rewards",
        "masks",
        "terminals",
        "next_observations",
        "next_actions",
    }
    assert dataset.observation_shape == (3,) and dataset.action_dim == 2
    assert {key: value.shape[0] for key, value in dataset.items()} == dict.fromkeys(dataset.keys(), 10)
    with pytest.raises(KeyError, match="available"):
        dataset["qpos"]
    with pytest.raises(ValueError):  # arrays are read-only: shared safely between samplers and buffers
        dataset["rewards"][0] = 5.0
    dataset.validate()


def test_subset_keeps_rows_and_metadata():
    dataset = Dataset(make_arrays(), {"env_id": None, "sha256": "abc"})
    part = dataset.subset([7, 2, 2])
    np.testing.assert_array_equal(part["rewards"], [7, 2, 2])
    assert part.num_transitions == 3 and part.metadata["subset_of"] == "abc"
    assert dataset.subset(slice(0, 4)).num_transitions == 4
    with pytest.raises(IndexError):
        dataset.subset([10])


def test_unequal_lengths_rejected():
    arrays = make_arrays()
    arrays["rewards"] = arrays["rewards"][:-1]
    with pytest.raises(DatasetError, match="different first dimensions"):
        Dataset(arrays)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda a: a["observations"].__setitem__((3, 1), np.nan), "observations contains NaN"),
        (lambda a: a.__setitem__("extra", np.zeros(10, np.float32)), "unknown keys"),
        (lambda a: a.pop("masks"), "missing keys"),
        (lambda a: a.__setitem__("rewards", a["rewards"].astype(np.float64)), "rewards has dtype float64"),
        (lambda a: a["masks"].__setitem__(0, 0.5), "masks must hold only 0 and 1"),
        (lambda a: a["terminals"].__setitem__(-1, 0.0), "last row must end a trajectory"),
        (lambda a: a["actions"].__setitem__((0, 0), 1.5), "actions leave"),
    ],
)
def test_validate_names_each_problem(corrupt, message):
    arrays = make_arrays()
    corrupt(arrays)
    with pytest.raises(DatasetError, match=message):
        Dataset(arrays).validate()


def test_validate_empty_and_task_shapes():
    empty = {key: value[:0] for key, value in make_arrays().items()}
    with pytest.raises(DatasetError, match="empty"):
        Dataset(empty).validate()
    # The toy task expects (1,) observations and (2,) actions; these have (3,).
    with pytest.raises(DatasetError, match="expects"):
        Dataset(make_arrays(), {"env_id": "fidec/toy-bimodal-v0"}).validate()


def test_next_actions_and_trajectory_starts_known_answers():
    actions = np.arange(6, dtype=np.float32)[:, None]
    ends = np.array([0, 0, 1, 0, 0, 1])
    np.testing.assert_array_equal(next_actions_within_trajectories(actions, ends)[:, 0], [1, 2, 2, 4, 5, 5])
    np.testing.assert_array_equal(trajectory_starts(ends), [0, 0, 0, 3, 3, 3])


def test_array_checksum_is_stable_and_sensitive():
    arrays = make_arrays()
    assert sha256_arrays(arrays) == sha256_arrays(dict(reversed(list(arrays.items()))))
    arrays["rewards"] = arrays["rewards"] + 1
    assert sha256_arrays(arrays) != sha256_arrays(make_arrays())


# -- BatchSampler -------------------------------------------------------------------------------------------------
def test_sampler_resumes_exactly():
    dataset = Dataset(make_arrays(n=100))
    sampler = BatchSampler(dataset, batch_size=8, seed=3)
    sampler.sample()
    state = sampler.state_dict()
    expected = [sampler.sample() for _ in range(3)]
    resumed = BatchSampler(dataset, batch_size=8, seed=999)
    resumed.load_state_dict(state)
    for batch, reference in zip((resumed.sample() for _ in range(3)), expected):
        for key in reference:
            np.testing.assert_array_equal(batch[key], reference[key])
    with pytest.raises(ValueError, match="same dataset"):
        BatchSampler(Dataset(make_arrays(n=50)), 8).load_state_dict(state)


def test_sampler_is_uniform():
    # Rewards 0..99, uniform sampling: mean 49.5, variance (100^2 - 1) / 12.
    sampler = BatchSampler(Dataset(make_arrays(n=100)), batch_size=200_000, seed=0)
    rewards = sampler.sample()["rewards"]
    assert abs(rewards.mean() - 49.5) < 0.3
    assert abs(rewards.var() - (100**2 - 1) / 12) < 15


def test_random_crop_known_offsets():
    images = pixel_dataset()["observations"][:2]
    np.testing.assert_array_equal(random_crop(images, np.array([[3, 3], [3, 3]])), images)  # centre = identity
    shifted = random_crop(images, np.array([[0, 0], [6, 6]]))
    assert shifted[0, 0, 0, 0] == 0 and shifted[0, 3, 3, 0] == 0 and shifted[0, 4, 4, 0] == 1  # edge padding
    assert shifted[1, 0, 0, 0] == 3 and shifted[1, -1, -1, 1] == 63  # shifted by +3, clamped at the border


def test_crop_augmentation_shares_offsets_between_obs_and_next_obs():
    sampler = BatchSampler(pixel_dataset(), batch_size=64, seed=0, crop_augment_prob=1.0)
    batch = sampler.sample()
    assert batch["observations"].shape == batch["next_observations"].shape == (64, 64, 64, 3)
    # Pixel (3, 3) of a crop at offset (dy, dx) shows the source pixel (dy, dx), whose channels store (row, col).
    offsets = batch["observations"][:, 3, 3, :2].astype(int)
    np.testing.assert_array_equal(offsets, batch["next_observations"][:, 3, 3, :2])
    assert offsets.min() == 0 and offsets.max() == 6 and len({tuple(o) for o in offsets}) > 10


def test_crop_coin_is_flipped_once_per_batch():
    sampler = BatchSampler(pixel_dataset(), batch_size=16, seed=1, crop_augment_prob=0.5)
    cropped = 0
    for _ in range(200):
        offsets = sampler.sample()["observations"][:, 3, 3, :2]
        is_identity = (offsets == 3).all()
        cropped += not is_identity
    assert 70 < cropped < 130
    with pytest.raises(ValueError, match="image observations"):
        BatchSampler(Dataset(make_arrays()), 4, crop_augment_prob=0.5)


def test_pixel_datasets_validate_with_uint8_observations():
    dataset = pixel_dataset().validate()
    assert dataset.observation_shape == (64, 64, 3)


def test_frame_stacking_repeats_first_frame_and_shifts_next():
    dataset = pixel_dataset(trajectory_lengths=(3, 4))  # trajectories: rows 0-2 and 3-6
    batch = BatchSampler(dataset, batch_size=256, seed=0, frame_stack=3).sample()
    assert batch["observations"].shape == (256, 64, 64, 9)
    starts = np.array([0, 0, 0, 3, 3, 3, 3])
    rows = batch["observations"][:, 0, 0, 8].astype(int)  # the newest frame's row index
    for stacked, next_stacked, row in zip(batch["observations"], batch["next_observations"], rows):
        frames = stacked[0, 0, 2::3]
        next_frames = next_stacked[0, 0, 2::3]
        np.testing.assert_array_equal(frames, [max(row - 2, starts[row]), max(row - 1, starts[row]), row])
        np.testing.assert_array_equal(next_frames, [max(row - 1, starts[row]), row, row + 1])
    assert set(rows) == set(range(7))


# -- ReplayBuffer -------------------------------------------------------------------------------------------------
def test_buffer_default_capacity_is_lazy():
    buffer = ReplayBuffer.from_dataset(Dataset(make_arrays()))
    assert buffer.capacity == 2_000_000 and len(buffer) == 10
    assert buffer.allocated_rows < 5_000
    with pytest.raises(ValueError, match="cannot hold"):
        ReplayBuffer.from_dataset(Dataset(make_arrays()), capacity=10)


def test_buffer_add_conventions_and_next_actions():
    buffer = ReplayBuffer.from_dataset(Dataset(make_arrays()), capacity=100)
    observation = np.ones(3, np.float32)
    buffer.add(observation, [0.1, 0.2], 1.0, observation * 2, terminated=False, truncated=False)
    buffer.add(observation, [0.3, 0.4], 2.0, observation * 3, terminated=False, truncated=True)
    buffer.add(observation, [0.5, 0.6], 3.0, observation * 4, terminated=True, truncated=False)
    rows = {key: value[10:13] for key, value in buffer._storage.items()}
    np.testing.assert_array_equal(rows["terminals"], [0, 1, 1])
    np.testing.assert_array_equal(rows["masks"], [1, 1, 0])  # truncation still bootstraps
    np.testing.assert_allclose(rows["next_actions"], [[0.3, 0.4], [0.3, 0.4], [0.5, 0.6]])
    np.testing.assert_array_equal(rows["next_observations"][:, 0], [2, 3, 4])
    assert len(buffer) == 13


def test_buffer_grows_then_wraps_when_full():
    buffer = ReplayBuffer(observation_shape=(3,), action_dim=2, capacity=40, initial_rows=4)
    for step in range(45):
        buffer.add(np.full(3, step), np.zeros(2), float(step), np.zeros(3), False, step % 10 == 9)
        assert buffer.allocated_rows >= min(step + 1, 40)
    assert len(buffer) == 40 and buffer.pointer == 5 and buffer.allocated_rows == 40
    np.testing.assert_array_equal(buffer._storage["rewards"][:5], [40, 41, 42, 43, 44])  # oldest overwritten

    dataset = Dataset(make_arrays())
    buffer = ReplayBuffer.from_dataset(dataset, capacity=15)
    for step in range(8):
        buffer.add(np.zeros(3), np.zeros(2), 100.0 + step, np.zeros(3), False, False)
    assert len(buffer) == 15 and buffer.pointer == 3
    np.testing.assert_array_equal(
        buffer._storage["rewards"], [105, 106, 107, 3, 4, 5, 6, 7, 8, 9, 100, 101, 102, 103, 104]
    )
    batch = buffer.sample(1000, np.random.default_rng(0))
    assert set(np.unique(batch["rewards"])) == set(buffer._storage["rewards"])


def test_buffer_online_state_round_trip():
    dataset = Dataset(make_arrays(), {"sha256": "data"})
    buffer = ReplayBuffer.from_dataset(dataset, capacity=15)
    rng = np.random.default_rng(0)
    for step in range(12):  # wraps over offline rows
        buffer.add(rng.normal(size=3), rng.uniform(-1, 1, 2), float(step), rng.normal(size=3), False, step == 6)
    state = buffer.online_state()
    assert len(state["rows"]["rewards"]) == 12

    restored = ReplayBuffer.from_dataset(dataset, capacity=15)
    restored.load_online_state(state)
    assert (restored.pointer, len(restored)) == (buffer.pointer, len(buffer))
    for key in buffer._storage:
        np.testing.assert_array_equal(restored._storage[key], buffer._storage[key])
    # Both continue identically, including the pending next action of the open episode.
    for target in (buffer, restored):
        target.add(np.zeros(3), [0.5, -0.5], 99.0, np.zeros(3), False, False)
    np.testing.assert_array_equal(restored._storage["next_actions"], buffer._storage["next_actions"])
    np.testing.assert_array_equal(
        buffer.sample(32, np.random.default_rng(1))["rewards"], restored.sample(32, np.random.default_rng(1))["rewards"]
    )

    other = ReplayBuffer.from_dataset(Dataset(make_arrays(), {"sha256": "other"}), capacity=15)
    with pytest.raises(ValueError, match="dataset_sha256"):
        other.load_online_state(state)


def test_buffer_end_episode_keeps_the_last_rows_own_action():
    buffer = ReplayBuffer.from_dataset(Dataset(make_arrays()), capacity=100)
    observation = np.ones(3, np.float32)
    buffer.add(observation, [0.1, 0.2], 0.0, observation, terminated=False, truncated=False)
    buffer.end_episode()  # e.g. a resumed run restarts its environment here
    buffer.add(observation, [0.7, 0.8], 0.0, observation, terminated=False, truncated=False)
    np.testing.assert_allclose(buffer._storage["next_actions"][10], [0.1, 0.2])
