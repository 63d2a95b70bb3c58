"""``fidec bench eval``: evaluation throughput, a vector env with W workers versus one environment.

Both sides run the same episodes (same task, seeds and a cheap fixed policy, so the policy costs nothing and the
simulator dominates). Environment construction is timed separately and excluded from episodes/s, because a
training run builds its evaluation environments once and reuses them.
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


def measure(env_id: str, episodes: int, workers: int, seed: int = 0, repeats: int = 2) -> list[dict]:
    """Best-of-``repeats`` episodes/s of one in-process env and of a ``workers``-process vector env.

    The two set-ups are timed alternately, so a change in machine load affects both alike.
    """
    import time

    from fidec_gym.envs.catalogue import task_info
    from fidec_gym.eval.run.evaluate import Evaluator

    action_dim = task_info(env_id).action_shape[0]
    setups, evaluators = {}, {}
    try:
        for count in (1, workers):
            start = time.perf_counter()
            evaluators[count] = Evaluator(env_id, count, vectorization="sync" if count == 1 else "async")
            evaluators[count].envs.reset(seed=seed)  # workers are up and their environments built
            setups[count] = time.perf_counter() - start
        best = {count: float("inf") for count in evaluators}
        steps = {}
        for _ in range(repeats):
            for count, evaluator in evaluators.items():
                start = time.perf_counter()
                result = evaluator.run(_fixed_policy(action_dim), episodes, seed)
                best[count] = min(best[count], time.perf_counter() - start)
                steps[count] = int(sum(result["episode_length"]))
    finally:
        for evaluator in evaluators.values():
            evaluator.close()
    return [
        {
            "env_id": env_id,
            "workers": count,
            "episodes": episodes,
            "env_steps": steps[count],
            "seconds": best[count],
            "episodes_per_s": episodes / best[count],
            "steps_per_s": steps[count] / best[count],
            "setup_s": setups[count],
        }
        for count in evaluators
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
    rows = measure(args.env, args.episodes, args.workers, args.seed, args.repeats)
    speedup = rows[1]["episodes_per_s"] / rows[0]["episodes_per_s"]
    for row in rows:
        row["speedup_vs_one_env"] = row["episodes_per_s"] / rows[0]["episodes_per_s"]
        row["cpu_count"] = os.cpu_count()
        row["load_average_1min"] = os.getloadavg()[0]  # other processes on the machine distort the ratio
    print(f"{'workers':>7} {'episodes/s':>11} {'steps/s':>9} {'setup s':>8} {'speed-up':>9}")
    for row in rows:
        print(
            f"{row['workers']:>7} {row['episodes_per_s']:>11.3f} {row['steps_per_s']:>9.1f} {row['setup_s']:>8.2f} "
            f"{row['speedup_vs_one_env']:>8.2f}x"
        )
    goal = "met" if speedup >= 1.7 else "NOT met"
    print(
        f"vector env with {args.workers} workers: {speedup:.2f}x one env (goal >= 1.7x on 2 cores: {goal}); "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
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
