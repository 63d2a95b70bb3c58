"""Register every catalogue task with Gymnasium under the ``fidec`` namespace.

Entry points are strings so that importing fidec_gym stays cheap: MuJoCo, OGBench and Gymnasium-Robotics are only
imported when an environment is made. Each entry point returns an environment that already applies its own time
limit and reports episode statistics (``envs.wrappers.EpisodeScore``), so the ``max_episode_steps`` recorded here is
informative (``gym.make`` adds a second, identical time limit that never fires first).
"""

from __future__ import annotations

import gymnasium as gym

from fidec_gym.envs.catalogue import all_tasks

ENTRY_POINTS = {
    "ogbench": "fidec_gym.envs.ogbench_env:make_ogbench_env",
    "visual": "fidec_gym.envs.ogbench_env:make_ogbench_env",
    "d4rl": "fidec_gym.envs.d4rl_env:make_d4rl_env",
    "toy": "fidec_gym.envs.toy:make_toy_env",
}


def register_all() -> int:
    """Register all tasks (idempotent). Returns the number of fidec IDs in the Gymnasium registry."""
    for env_id, spec in all_tasks().items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=ENTRY_POINTS[spec.suite],
            kwargs={"task": spec.name},
            max_episode_steps=spec.horizon,
            disable_env_checker=False,
        )
    return sum(1 for key in gym.registry if key.startswith("fidec/"))
