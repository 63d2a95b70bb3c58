"""``fidec quickstart``: the ``quick`` preset end to end — data, grid, comparison, report.

1. the small cube-single dataset of the preset is generated locally when missing (no download);
2. every cell of the preset runs (re-running resumes: finished cells are skipped, unfinished ones continue from
   their checkpoints);
3. the comparison tables are written and the report is built; the path of ``index.html`` is returned.

JAX picks its backend itself: the GPU when CUDA-enabled JAX is installed and a GPU is visible, else the CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional


def quickstart(
    out_dir: str | Path = "results/quickstart",
    workers: Optional[int] = None,
    backend: str = "local",
    preset: str = "quick",
    progress: bool = True,
    reps: int = 1000,
) -> Path:
    """Run ``preset`` into ``out_dir``, compare with the paper and write the report; returns index.html's path."""
    from fidec_gym.eval.grid.leaderboard import load_preset, run_leaderboard
    from fidec_gym.eval.paper.compare import compare
    from fidec_gym.eval.paper.published import load_published
    from fidec_gym.eval.paper.report import build_report
    from fidec_gym.eval.store import ResultsStore

    spec = load_preset(preset)
    out = Path(out_dir).expanduser().resolve()
    _say(f"[1/3] {spec.name}: {len(spec.cells())} cells ({', '.join(spec.agents)}) -> {out}")
    result = run_leaderboard(spec, out, backend=backend, workers=workers, progress=progress)
    _say(
        f"      {len(result.done)} cells finished now, {len(result.skipped)} already finished or failed before, "
        f"{len(result.failed)} failed"
    )
    for cell, message in result.failed.items():
        _say(f"      failed: {cell}: {message.splitlines()[0] if message else ''}")

    _say("[2/3] comparing with the published tables")
    store = ResultsStore(out)
    published = load_published("fidec-paper")
    comparison = compare(store, published, preset=spec.name, reps=reps)
    comparison.write(out / "comparison")
    _say(f"      {len(comparison.scores)} finished runs; tables in {out / 'comparison'}")

    _say("[3/3] building the report")
    index = build_report(
        store,
        published,
        preset=spec.name,
        reps=reps,
        comparison=comparison,
        title=f"fidec-gym quickstart ({spec.name}): a tour of the pipeline, not a benchmark",
    )
    store.close()
    return index


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
