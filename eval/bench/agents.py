"""``fidec bench agents``: milliseconds per update of every registered agent.

For each agent (FiDec once per preset) and each size it times, after compilation and with
``block_until_ready``, the fastest of ``--rounds`` rounds:

* ``single_ms``: one ``agent.update`` call per step;
* ``update_n_ms``: ``agent.update_n`` over ``--fused`` stacked batches, per step;
* ``vmap_ms``: ``vmapped_update`` of ``--seeds`` seeds (one batch per seed), per step for all seeds together;
  ``vmap_per_seed_ms`` divides it by the seed count and ``vmap_ratio`` = vmap_ms / single_ms (the cost of N seeds
  relative to one; below N means the seeds share the hardware well).

Sizes: ``paper`` = 4 x 512 networks, ``small`` = 2 x 64; both use batch 256, observation dim 28 and action dim 5
(cube-single). The table is printed and written as CSV and JSON under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from fidec_gym.errors import ConfigError
from fidec_gym.files import atomic_write_text

SIZES = {
    "paper": {"hidden_dims": (512, 512, 512, 512), "batch_size": 256},
    "small": {"hidden_dims": (64, 64), "batch_size": 256},
}
OBSERVATION_DIM, ACTION_DIM = 28, 5
FIDEC_PRESETS = ("paper", "official", "local", "isotropic")
COLUMNS = (
    "size",
    "agent",
    "variant",
    "single_ms",
    "update_n_ms",
    "vmap_ms",
    "vmap_per_seed_ms",
    "vmap_ratio",
    "compile_s",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes",
        default="small,paper",
        help=f"comma-separated network sizes to time, from {sorted(SIZES)} (default: small,paper)",
    )
    parser.add_argument("--steps", type=int, default=50, help="timed update steps per column (default: 50)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="timing rounds per column; the fastest round is reported (default: 3)"
    )
    parser.add_argument("--fused", type=int, default=10, help="batches per update_n call (default: 10)")
    parser.add_argument("--seeds", type=int, default=4, help="seeds in the vmapped column (default: 4)")
    parser.add_argument("--agents", default=None, help="comma-separated agent names (default: every registered agent)")
    parser.add_argument("--out", default="results/bench", help="directory for bench_agents.csv/.json")


def _random_batch(rng: Any, leading: tuple[int, ...]) -> dict:
    """A batch with every key any agent reads; ``leading`` is e.g. (B,), (n, B) or (seeds, B)."""
    import numpy as np

    def normal(*shape: int) -> Any:
        return rng.normal(size=(*leading, *shape)).astype(np.float32)

    actions = np.clip(normal(ACTION_DIM), -1 + 1e-5, 1 - 1e-5)
    next_actions = np.clip(normal(ACTION_DIM), -1 + 1e-5, 1 - 1e-5)
    return {
        "observations": normal(OBSERVATION_DIM),
        "next_observations": normal(OBSERVATION_DIM),
        "actions": actions,
        "next_actions": next_actions,
        "rewards": -rng.integers(0, 2, size=leading).astype(np.float32),
        "masks": np.ones(leading, dtype=np.float32),
        "terminals": np.zeros(leading, dtype=np.float32),
    }


def _variants(names: list[str]) -> list[tuple[str, str, dict]]:
    """(agent, variant label, config overrides) rows; FiDec is timed once per preset."""
    rows: list[tuple[str, str, dict]] = []
    for name in names:
        if name == "fidec":
            rows.extend((name, preset, {"preset": preset}) for preset in FIDEC_PRESETS)
            # What `official` would cost with the released code's logging-only roll-out in every update.
            rows.append((name, "official+log_mse", {"preset": "official", "log_sample_mse": True}))
        else:
            rows.append((name, "default", {}))
    return rows


def _size_overrides(defaults: dict, size: dict) -> dict:
    """Every ``*hidden_dims`` key of the agent set to the size's widths, plus the batch size."""
    overrides = {key: size["hidden_dims"] for key in defaults if key.endswith("hidden_dims")}
    if "batch_size" in defaults:
        overrides["batch_size"] = size["batch_size"]
    return overrides


def _time_calls(call: Any, repeats: int, rounds: int = 3) -> float:
    """Seconds per call of ``call()`` (which returns the new state to block on), after one warm-up call.

    The best of ``rounds`` rounds of ``repeats`` calls is reported: on a shared machine the minimum is the least
    disturbed estimate of the intrinsic cost (the ``timeit`` convention).
    """
    import jax

    jax.block_until_ready(call())
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        result = None
        for _ in range(repeats):
            result = call()
        jax.block_until_ready(result)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def bench_one(name: str, overrides: dict, size: dict, steps: int, fused: int, seeds: int, rounds: int = 3) -> dict:
    """The timing columns of one agent at one size."""
    import jax
    import numpy as np

    from fidec_gym import agents

    rng = np.random.default_rng(0)
    batch_size = size["batch_size"]
    batch = jax.device_put(_random_batch(rng, (batch_size,)))
    stacked = jax.device_put(_random_batch(rng, (fused, batch_size)))
    per_seed = jax.device_put(_random_batch(rng, (seeds, batch_size)))
    config = {**_size_overrides(agents.get_config(name), size), **overrides}

    compile_start = time.perf_counter()
    agent = agents.make_agent(name, 0, batch, config)
    state = {"agent": agent}

    def single() -> Any:
        state["agent"], _ = state["agent"].update(batch)
        return state["agent"]

    jax.block_until_ready(single())  # compile
    compile_s = time.perf_counter() - compile_start
    single_s = _time_calls(single, steps, rounds)

    fused_state = {"agent": agent}

    def fused_call() -> Any:
        fused_state["agent"], _ = fused_state["agent"].update_n(stacked)
        return fused_state["agent"]

    update_n_s = _time_calls(fused_call, max(1, steps // fused), rounds) / fused

    vmapped = {"agents": agents.create_vmapped(type(agent), np.arange(seeds), batch, agent.config)}

    def vmap_call() -> Any:
        vmapped["agents"], _ = agents.vmapped_update(vmapped["agents"], per_seed)
        return vmapped["agents"]

    vmap_s = _time_calls(vmap_call, steps, rounds)
    return {
        "single_ms": 1e3 * single_s,
        "update_n_ms": 1e3 * update_n_s,
        "vmap_ms": 1e3 * vmap_s,
        "vmap_per_seed_ms": 1e3 * vmap_s / seeds,
        "vmap_ratio": vmap_s / single_s,
        "compile_s": compile_s,
    }


def _goals(rows: list[dict], seeds: int) -> dict:
    """The targets the benchmark reports: FiDec ``local`` vs DeFlow, ``official`` vs the same with the logging
    roll-out, and N vmapped seeds vs one."""
    goals: dict = {}
    for size in sorted({row["size"] for row in rows}):
        by_key = {(row["agent"], row["variant"]): row for row in rows if row["size"] == size}
        entry: dict = {}
        if ("fidec", "local") in by_key and ("deflow", "default") in by_key:
            ratio = by_key["fidec", "local"]["single_ms"] / by_key["deflow", "default"]["single_ms"]
            entry["fidec_local_over_deflow"] = {"ratio": ratio, "goal": 1.15, "met": ratio <= 1.15}
        if ("fidec", "official") in by_key and ("fidec", "official+log_mse") in by_key:
            ratio = by_key["fidec", "official"]["single_ms"] / by_key["fidec", "official+log_mse"]["single_ms"]
            entry["fidec_official_over_logging_rollout"] = {"ratio": ratio, "goal": 0.8, "met": ratio <= 0.8}
        worst = max(rows_for_size["vmap_ratio"] for rows_for_size in by_key.values())
        entry[f"vmap_{seeds}_seeds_over_one_worst"] = {
            "ratio": worst,
            "goal": 3.2 if seeds == 4 else None,
            "met": worst <= 3.2 if seeds == 4 else None,
        }
        goals[size] = entry
    return goals


def run(args: argparse.Namespace) -> int:
    import csv
    import io

    import jax
    from tqdm import tqdm

    from fidec_gym import agents

    sizes = [size.strip() for size in args.sizes.split(",") if size.strip()]
    unknown_sizes = [size for size in sizes if size not in SIZES]
    if unknown_sizes:
        raise ConfigError(f"unknown size(s) {unknown_sizes}; use --sizes with values from {sorted(SIZES)}")
    names = list(agents.AGENTS) if not args.agents else [name.strip() for name in args.agents.split(",")]
    unknown_agents = [name for name in names if name not in agents.AGENTS]
    if unknown_agents:
        raise ConfigError(f"unknown agent(s) {unknown_agents}; use --agents with names from {sorted(agents.AGENTS)}")
    for flag in ("steps", "fused", "seeds", "rounds"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag} must be at least 1, got {getattr(args, flag)}")

    os.makedirs(args.out, exist_ok=True)
    csv_path = os.path.join(args.out, "bench_agents.csv")

    def write_csv(rows: list[dict]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(csv_path, buffer.getvalue())

    def format_row(row: dict) -> str:
        return (
            f"{row['size']:6} {row['agent']:7} {row['variant']:9} {row['single_ms']:8.2f} "
            f"{row['update_n_ms']:9.2f} {row['vmap_ms']:8.2f} {row['vmap_per_seed_ms']:9.2f} "
            f"{row['vmap_ratio']:6.2f} {row['compile_s']:7.1f}s"
        )

    jobs = [(size, *variant) for size in sizes for variant in _variants(names)]
    rows = []
    for size, name, variant, overrides in tqdm(jobs, desc="bench agents", unit="agent"):
        timings = bench_one(name, overrides, SIZES[size], args.steps, args.fused, args.seeds, args.rounds)
        rows.append({"size": size, "agent": name, "variant": variant, **timings})
        tqdm.write(format_row(rows[-1]))
        write_csv(rows)  # rows measured so far survive an interruption

    print(
        f"ms per update ({jax.devices()[0].platform}, obs {OBSERVATION_DIM}, action {ACTION_DIM}, "
        f"{args.seeds} vmapped seeds, update_n over {args.fused} batches)"
    )
    print(
        f"{'size':6} {'agent':7} {'variant':9} {'single':>8} {'update_n':>9} {'vmap':>8} {'per seed':>9} "
        f"{'ratio':>6} {'compile':>8}"
    )
    for row in rows:
        print(format_row(row))
    goals = _goals(rows, args.seeds)
    for size, entry in goals.items():
        for goal, value in entry.items():
            print(f"goal [{size}] {goal}: {value['ratio']:.2f} (goal <= {value['goal']}, met: {value['met']})")

    meta = {
        "device": str(jax.devices()[0]),
        "platform": jax.devices()[0].platform,
        "steps": args.steps,
        "rounds": args.rounds,
        "fused": args.fused,
        "seeds": args.seeds,
        "observation_dim": OBSERVATION_DIM,
        "action_dim": ACTION_DIM,
    }
    atomic_write_text(
        os.path.join(args.out, "bench_agents.json"), json.dumps({"meta": meta, "rows": rows, "goals": goals}, indent=2)
    )
    print(f"wrote {csv_path} and bench_agents.json")
    return 0
