"""``fidec bench eval``: evaluation throughput of the three layouts an evaluation can use, against one environment:
W worker processes with one sub-environment each ("async"), and every episode side by side in this process ("sync",
one policy call per step for all of them).

All layouts run the same episodes (same task and seeds). The default policy is a cheap fixed one, so the simulator
and the pipes dominate; ``--agent NAME`` uses a freshly initialised agent of the given name (2 x 256 networks)
instead, so each vector step also pays for a policy call, as in training. Environment construction is timed
separately and excluded from episodes/s, because a training run builds its evaluation environments once and reuses
them.
"""

from __future__ import annotations

import argparse

from fidec_gym.errors import ConfigError
from fidec_gym.files import atomic_path

DEFAULT_ENV = "fidec/cube-single-play-singletask-task2-v0"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default=DEFAULT_ENV, help=f"task ID (default {DEFAULT_ENV})")
    parser.add_argument("--episodes", type=int, default=8, help="episodes per measurement (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="vector-env workers (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions, the best is reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--agent", default=None, help="act with a fresh agent of this name (2 x 256) instead of a fixed policy"
    )
    parser.add_argument("--out", default="results/bench", help="directory for bench_eval.csv/json")


def _fixed_policy(action_dim: int):
    import numpy as np

    # A smooth open-loop sweep: cheap, deterministic, and it moves the arm (zero actions would hold it still).
    state = {"t": 0}

    def policy(observations):
        state["t"] += 1
        phase = 0.05 * state["t"] + np.arange(action_dim)
        return np.repeat(np.sin(phase)[None].astype(np.float32), len(observations), axis=0)

    return policy


def _agent_policy(env_id: str, name: str, seed: int):
    import numpy as np

    from fidec_gym.agents import example_batch_from_config, get_config, make_agent
    from fidec_gym.envs.catalogue import task_info
    from fidec_gym.eval.run.evaluate import make_policy

    spec = task_info(env_id)
    shapes = {"observation_shape": spec.observation_shape, "observation_dtype": np.float32}
    batch = example_batch_from_config({**shapes, "action_dim": spec.action_shape[0]})
    sizes = {key: [256, 256] for key in ("actor_hidden_dims", "value_hidden_dims") if key in get_config(name)}
    return make_policy(make_agent(name, seed, batch, sizes), seed)


def measure(
    env_id: str, episodes: int, workers: int, seed: int = 0, repeats: int = 2, agent: str | None = None
) -> list[dict]:
    """Best-of-``repeats`` episodes/s of one in-process env, a ``workers``-process vector env and ``episodes``
    sub-environments side by side in this process (at most :data:`SYNC_ENVS_MAX`).

    The set-ups are timed alternately, so a change in machine load affects all alike. ``agent``: act with a fresh
    agent of that name instead of the fixed policy (a policy call per vector step, as in training).
    """
    import time

    from fidec_gym.envs.catalogue import task_info
    from fidec_gym.eval.run.evaluate import SYNC_ENVS_MAX, Evaluator

    action_dim = task_info(env_id).action_shape[0]
    agent_policy = _agent_policy(env_id, agent, seed) if agent else None
    layouts = {"one env": (1, "sync"), "processes": (workers, "async")}
    layouts["side by side"] = (min(episodes, SYNC_ENVS_MAX), "sync")
    setups, evaluators = {}, {}
    try:
        for layout, (count, vectorization) in layouts.items():
            start = time.perf_counter()
            evaluators[layout] = Evaluator(env_id, count, vectorization=vectorization)
            evaluators[layout].envs.reset(seed=seed)  # workers are up and their environments built
            setups[layout] = time.perf_counter() - start
        best = {layout: float("inf") for layout in evaluators}
        steps = {}
        for _ in range(repeats):
            for layout, evaluator in evaluators.items():
                policy = agent_policy or _fixed_policy(action_dim)
                start = time.perf_counter()
                result = evaluator.run(policy, episodes, seed)
                best[layout] = min(best[layout], time.perf_counter() - start)
                steps[layout] = int(sum(result["episode_length"]))
    finally:
        for evaluator in evaluators.values():
            evaluator.close()
    return [
        {
            "env_id": env_id,
            "layout": layout,
            "vectorization": layouts[layout][1],
            "processes": layouts[layout][0] if layouts[layout][1] == "async" else 1,
            "sub_envs": layouts[layout][0],
            "policy": agent or "fixed",
            "episodes": episodes,
            "env_steps": steps[layout],
            "seconds": best[layout],
            "episodes_per_s": episodes / best[layout],
            "steps_per_s": steps[layout] / best[layout],
            "setup_s": setups[layout],
        }
        for layout in evaluators
    ]


def run(args) -> int:
    import os
    from pathlib import Path

    for flag in ("episodes", "workers", "repeats"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    os.environ.setdefault("MUJOCO_GL", "egl")
    from fidec_gym.envs.registration import register_all

    register_all()
    if args.agent is not None:
        from fidec_gym.agents import agent_class

        agent_class(args.agent)  # an unknown name fails here, with the known names, before any process starts
    rows = measure(args.env, args.episodes, args.workers, args.seed, args.repeats, args.agent)
    for row in rows:
        row["speedup_vs_one_env"] = row["episodes_per_s"] / rows[0]["episodes_per_s"]
        row["cpu_count"] = os.cpu_count()
        row["load_average_1min"] = os.getloadavg()[0]  # other processes on the machine distort the ratio
    print(f"{'layout':<32} {'episodes/s':>11} {'steps/s':>9} {'setup s':>8} {'speed-up':>9}")
    for row in rows:
        name = f"{row['layout']} ({row['processes']} proc, {row['sub_envs']} envs)"
        print(
            f"{name:<32} {row['episodes_per_s']:>11.3f} {row['steps_per_s']:>9.1f} {row['setup_s']:>8.2f} "
            f"{row['speedup_vs_one_env']:>8.2f}x"
        )
    speedup = rows[1]["speedup_vs_one_env"]
    goal = "met" if speedup >= 1.7 else "NOT met"
    fastest = max(rows, key=lambda row: row["episodes_per_s"])
    print(
        f"vector env with {args.workers} workers: {speedup:.2f}x one env (goal >= 1.7x on 2 cores: {goal}); fastest "
        f"layout here: {fastest['layout']}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, write in (("bench_eval.csv", _write_csv), ("bench_eval.json", _write_json)):
        with atomic_path(out / name) as tmp:
            write(tmp, rows)
    print(f"wrote {out / 'bench_eval.csv'} and {out / 'bench_eval.json'}")
    return 0


def _write_csv(path, rows) -> None:
    import csv

    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _write_json(path, rows) -> None:
    import json

    with open(path, "w") as stream:
        json.dump(rows, stream, indent=2)
