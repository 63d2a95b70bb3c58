"""``fidec bench data``: throughput of local data generation with 1 and 2 worker processes: OGBench manipulation
(oracles), and the locomotion generators (``--dataset antmaze-large-navigate`` or a D4RL antmaze task such as
``antmaze-large-diverse``, driven by the shipped expert or ``--expert``).

Each configuration generates the same seeded episodes into a temporary directory (so the outputs are identical
and the files are discarded); the table reports wall time, transitions per second and the speed-up over one worker.
The target is a speed-up of at least 1.8 with two workers on a machine with two idle cores; the time to start the
worker processes is included, so short runs understate it. CPU seconds per transition (parent plus workers) are
reported too: unlike wall time they stay meaningful on a busy machine, and the JSON records the load average.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        default="cube-single-play",
        help="dataset to generate: manipulation play, a navigate maze (antmaze-large-navigate) or a D4RL antmaze task",
    )
    parser.add_argument("--episodes", type=int, default=8, help="training episodes per run (val adds 10%%, >= 1)")
    parser.add_argument(
        "--max-episode-steps", type=int, default=None, help="rows per episode (default: the dataset's, e.g. 1001)"
    )
    parser.add_argument("--expert", default=None, help="locomotion: expert zip or directory (default: shipped)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/bench", help="directory for bench_data.csv and bench_data.json")


def run(args) -> int:
    import hashlib
    import json
    import os
    import platform
    import tempfile

    import numpy as np
    import pandas as pd

    from fidec_gym.envs.generate import generate_manipulation_dataset

    rows = []
    reference: str | None = None
    for workers in args.workers:
        with tempfile.TemporaryDirectory(prefix="fidec-bench-data-") as directory:
            started, cpu_started = time.perf_counter(), os.times()
            files = _generate(args, directory, workers, generate_manipulation_dataset)
            seconds = time.perf_counter() - started
            cpu = os.times()
            # Worker processes are reaped before the call returns, so their time is in the children's fields.
            cpu_seconds = sum(
                getattr(cpu, f) - getattr(cpu_started, f)
                for f in ("user", "system", "children_user", "children_system")
            )
            transitions, digest = _count_and_digest(files, np, hashlib)
        identical = None if reference is None else digest == reference
        reference = digest if reference is None else reference
        rows.append(
            {
                "dataset": args.dataset,
                "workers": workers,
                "episodes": args.episodes,
                "transitions": transitions,
                "seconds": round(seconds, 2),
                "transitions_per_s": round(transitions / seconds, 1),
                "cpu_seconds": round(cpu_seconds, 2),
                "ms_cpu_per_transition": round(1000 * cpu_seconds / transitions, 3),
                "same_data_as_first": identical,
            }
        )
    table = pd.DataFrame(rows)
    table["speedup"] = (table["transitions_per_s"] / table["transitions_per_s"].iloc[0]).round(2)
    print(table.to_string(index=False))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "bench_data.csv", index=False)
    machine = {
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    (out / "bench_data.json").write_text(json.dumps({"machine": machine, "rows": table.to_dict("records")}, indent=2))
    print(f"wrote {out / 'bench_data.csv'} and {out / 'bench_data.json'}")
    return 0


def _generate(args, directory, workers, generate_manipulation_dataset) -> list:
    """Generate ``args.dataset`` into ``directory``; the data files written (npz train + val, or one hdf5)."""
    from fidec_gym.envs.locomotion.d4rl_antmaze import generate_d4rl_antmaze_dataset, parse_d4rl_antmaze
    from fidec_gym.envs.locomotion.navigate import generate_navigate_dataset, parse_navigate_dataset

    common = dict(workers=workers, seed=args.seed, progress=False, max_episode_steps=args.max_episode_steps)
    if parse_navigate_dataset(args.dataset):
        return list(generate_navigate_dataset(args.dataset, args.episodes, directory, expert=args.expert, **common))
    if parse_d4rl_antmaze(args.dataset):
        return [generate_d4rl_antmaze_dataset(args.dataset, args.episodes, directory, expert=args.expert, **common)]
    if common["max_episode_steps"] is None:
        common["max_episode_steps"] = 1001
    return list(generate_manipulation_dataset(args.dataset, args.episodes, directory, **common))


def _count_and_digest(files, np, hashlib) -> tuple[int, str]:
    """Rows in all files, and a digest of the first file's actions (equal digests: the same data)."""
    if str(files[0]).endswith(".hdf5"):
        import h5py

        with h5py.File(files[0], "r") as f:
            actions = f["actions"][()]
        return len(actions), hashlib.sha256(actions.tobytes()).hexdigest()
    transitions, digest = 0, ""
    for file in files:
        with np.load(file) as archive:
            transitions += len(archive["terminals"])
            digest = digest or hashlib.sha256(archive["actions"].tobytes()).hexdigest()
    return transitions, digest
