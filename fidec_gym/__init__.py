"""fidec-gym: offline-RL benchmark tasks, datasets, FiDec and its baselines behind one interface.

Importing this package registers every task with Gymnasium under the ``fidec`` namespace::

    import gymnasium as gym, fidec_gym
    env = gym.make("fidec/cube-single-play-singletask-task2-v0")
    data = fidec_gym.load_dataset("fidec/cube-single-play-singletask-task2-v0")
"""

from fidec_gym.envs.catalogue import TaskSpec, UnknownTaskError, list_tasks, task_hyperparameters, task_info
from fidec_gym.envs.registration import register_all

__version__ = "0.1.0"
__all__ = ["TaskSpec", "UnknownTaskError", "list_tasks", "load_dataset", "task_hyperparameters", "task_info"]

register_all()


def load_dataset(env_id: str, path=None, **kwargs):
    """Load the offline dataset of ``env_id`` (see ``envs.datasets.load_dataset`` for the options)."""
    from fidec_gym.envs.datasets import load_dataset as _load

    return _load(env_id, path=path, **kwargs)
