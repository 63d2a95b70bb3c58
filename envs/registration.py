"""Register every catalogue task with Gymnasium under the ``fidec`` namespace.

Entry points are strings so that importing fidec_gym stays cheap: MuJoCo, OGBench and Gymnasium-Robotics are only
imported when an environment is made. Each entry point returns an environment that already applies its own time
limit and reports episode statistics (``envs.wrappers.EpisodeScore``), so the ``max_episode_steps`` recorded here is
informative (``gym.make`` adds a second, identical time limit that never fires first).

Toy bandits are registered without ``max_episode_steps`` (so ``gym.make`` adds no ``TimeLimit``): the bandit itself
ends every episode by *termination* after its one step, which is the catalogue horizon of 1. A one-step ``TimeLimit``
would also mark that step *truncated* although nothing was cut short, and Gymnasium's ``check_env`` rejects an
environment that truncates after one step.
"""

from __future__ import annotations

from typing import Optional

import gymnasium as gym

from fidec_gym.envs.catalogue import TaskSpec, all_tasks

ENTRY_POINTS = {
    "ogbench": "fidec_gym.envs.ogbench_env:make_ogbench_env",
    "visual": "fidec_gym.envs.ogbench_env:make_ogbench_env",
    "d4rl": "fidec_gym.envs.d4rl_env:make_d4rl_env",
    "toy": "fidec_gym.envs.toy:make_toy_env",
}


def registered_max_episode_steps(spec: TaskSpec) -> Optional[int]:
    """The ``max_episode_steps`` of a task's registration: its horizon, or None for toy bandits (see module doc)."""
    return None if spec.suite == "toy" else spec.horizon


def register_all() -> int:
    """Register all tasks (idempotent). Returns the number of fidec IDs in the Gymnasium registry."""
    for env_id, spec in all_tasks().items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=ENTRY_POINTS[spec.suite],
            kwargs={"task": spec.name},
            max_episode_steps=registered_max_episode_steps(spec),
            disable_env_checker=False,
        )
    return sum(1 for key in gym.registry if key.startswith("fidec/"))
