"""``fidec bench seeds``: the cost of one update per seed when N seeds train in one compiled program (vmapped,
``K`` updates per dispatch, batches drawn on the device: the path of ``fidec train --seeds``) against one seed alone
on the same path.

For every agent and seed count it times, after compilation and with ``block_until_ready``, the fastest of
``--rounds`` rounds of ``--calls`` dispatches of ``--updates-per-call`` updates on a synthetic cube-single-sized
dataset (observation 28, action 5). ``per_seed_ms`` divides a dispatch's time by updates and seeds;
``ratio_to_one_seed`` = per_seed_ms(N) / per_seed_ms(1) (below 1: seeds share the hardware).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fidec_gym.errors import ConfigError
from fidec_gym.files import atomic_write_text

SIZES = {"small": (64, 64), "medium": (256, 256, 256), "paper": (512, 512, 512, 512)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agents", default="bc,fql,fidec", help="comma-separated agents (default: bc,fql,fidec)")
    parser.add_argument("--seeds", default="1,8", help="comma-separated seed counts (default: 1,8)")
    parser.add_argument("--size", choices=sorted(SIZES), default="small", help="network size (default: small, 2x64)")
    parser.add_argument("--updates-per-call", type=int, default=100, help="lax.scan length per dispatch")
    parser.add_argument("--calls", type=int, default=5, help="timed dispatches per round (default: 5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the fastest is reported (default: 3)")
    parser.add_argument("--out", default="results/bench", help="directory for bench_seeds.csv/.json")


def _dataset(rows: int = 100_000):
    import numpy as np

    rng = np.random.default_rng(0)
    actions = np.clip(rng.normal(size=(rows, 5)), -0.99, 0.99).astype(np.float32)
    return {
        "observations": rng.normal(size=(rows, 28)).astype(np.float32),
        "next_observations": rng.normal(size=(rows, 28)).astype(np.float32),
        "actions": actions,
        "next_actions": actions[::-1].copy(),
        "rewards": -rng.integers(0, 2, size=rows).astype(np.float32),
        "masks": np.ones(rows, np.float32),
        "terminals": np.zeros(rows, np.float32),
    }


def time_seeds(agent_name: str, seeds: int, dims: tuple, updates: int, calls: int, rounds: int) -> dict:
    import jax
    import jax.numpy as jnp

    from fidec_gym.agents import AGENTS
    from fidec_gym.agents.seeds import create_vmapped
    from fidec_gym.eval.run.vmapped import device_updates

    data = {key: jnp.asarray(value) for key, value in _dataset().items()}
    example = {key: value[:2] for key, value in data.items()}
    overrides = {"actor_hidden_dims": dims, "batch_size": 256}
    if agent_name != "bc":
        overrides["value_hidden_dims"] = dims
    agents = create_vmapped(AGENTS[agent_name], list(range(seeds)), example, overrides)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(seeds)])
    start = time.perf_counter()
    agents, keys, info = device_updates(agents, keys, data, updates, 256)
    jax.block_until_ready(info)
    compile_s = time.perf_counter() - start
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            agents, keys, info = device_updates(agents, keys, data, updates, 256)
        jax.block_until_ready(info)
        best = min(best, time.perf_counter() - start)
    per_update = 1000 * best / (calls * updates)
    return {
        "agent": agent_name,
        "seeds": seeds,
        "ms_per_update_all_seeds": per_update,
        "per_seed_ms": per_update / seeds,
        "compile_s": compile_s,
        "backend": jax.default_backend(),
    }


def _check_arguments(args: argparse.Namespace) -> tuple[list[str], list[int]]:
    """The agents and seed counts asked for; every bad value is named before anything is compiled."""
    from fidec_gym.names import AGENT_NAMES

    agents = [name.strip() for name in args.agents.split(",") if name.strip()]
    unknown = [name for name in agents if name not in AGENT_NAMES]
    if unknown or not agents:
        raise ConfigError(f"unknown agent(s) {unknown}; use --agents with names from {list(AGENT_NAMES)}")
    try:
        counts = [int(count) for count in args.seeds.split(",") if count.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {args.seeds!r}: give comma-separated seed counts, e.g. --seeds 1,8") from None
    if not counts or min(counts) < 1:
        raise ConfigError(f"--seeds {args.seeds!r}: every seed count must be at least 1")
    for flag in ("updates_per_call", "calls", "rounds"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    return agents, counts


def run(args: argparse.Namespace) -> int:
    agents, counts = _check_arguments(args)
    rows = []
    for agent in agents:
        single = None
        for count in counts:
            row = time_seeds(agent, count, SIZES[args.size], args.updates_per_call, args.calls, args.rounds)
            single = row["per_seed_ms"] if count == 1 else single
            row["ratio_to_one_seed"] = row["per_seed_ms"] / single if single else float("nan")
            row["size"] = args.size
            rows.append(row)
            print(
                f"{agent:>7} {args.size} {count} seeds: {row['ms_per_update_all_seeds']:.3f} ms/update for all "
                f"seeds, {row['per_seed_ms']:.3f} per seed ({row['ratio_to_one_seed']:.2f}x one seed alone; "
                f"compile {row['compile_s']:.1f} s, {row['backend']})",
                flush=True,
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0])
    atomic_write_text(
        out / "bench_seeds.csv",
        "\n".join([",".join(columns)] + [",".join(str(row[c]) for c in columns) for row in rows]) + "\n",
    )
    atomic_write_text(out / "bench_seeds.json", json.dumps(rows, indent=2) + "\n")
    print(f"wrote {out / 'bench_seeds.csv'}")
    return 0
