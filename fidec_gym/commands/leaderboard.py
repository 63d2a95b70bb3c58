"""``fidec leaderboard run|plan|status|compare|report|export`` and ``fidec quickstart``.

Heavy imports (JAX, pandas, matplotlib, Ray) stay inside the command functions so that ``fidec --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fidec_gym.errors import ConfigError, DataNotFoundError, ResultsNotFoundError

DEFAULT_RESULTS = Path("results")
# `leaderboard run` when nothing failed but cells were left to another live process (EX_TEMPFAIL: try again later).
HELD_EXIT_CODE = 75


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "leaderboard",
        help="run a preset grid (agents x tasks x seeds), inspect it, compare with the paper, report",
        description="Run leaderboard presets and compare their results with the published tables.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    run = actions.add_parser("run", help="run (or resume) every cell of a preset")
    run.add_argument("--preset", required=True, help="built-in preset name (smoke, quick, ...) or a YAML path")
    run.add_argument("--out", type=Path, help="results directory (default: results/<preset>)")
    run.add_argument(
        "--backend", choices=["local", "ray"], default="local", help="local process pool (default) or Ray tasks"
    )
    run.add_argument(
        "--ray-address", help="existing Ray cluster, HOST:PORT / ray://HOST:PORT / auto (default: start Ray locally)"
    )
    run.add_argument("--workers", type=int, help="cells in parallel (default: 2 on a CPU or one GPU)")
    run.add_argument("--dry-run", action="store_true", help="print the plan (`leaderboard plan`) and stop")
    run.add_argument(
        "--retry-failed",
        action="store_true",
        help="also re-run cells that failed before (with the preset's current settings if it was edited since)",
    )
    seeds = run.add_mutually_exclusive_group()
    seeds.add_argument(
        "--seeds-together",
        dest="seeds_together",
        action="store_const",
        const=True,
        help="train a cell's seeds in one vmapped program (the default)",
    )
    seeds.add_argument(
        "--one-seed-per-process",
        dest="seeds_together",
        action="store_const",
        const=False,
        help="train a cell's seeds one after another, one program per seed (to time the two paths side by side)",
    )
    _add_selection(run)
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.set_defaults(func=run_command, seeds_together=True)
    run.epilog = (
        "Exit status: 0 all cells done; 1 some cells failed; 75 cells left to another live `leaderboard run` on the "
        "same directory; 130/143 interrupted (Ctrl-C/SIGTERM; run again to resume); 28 disk full; 2 bad input."
    )

    plan = actions.add_parser(
        "plan",
        help="what a preset will run: cells, runs, datasets present or missing, estimated time",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    plan.add_argument("--preset", required=True, help="built-in preset name or a YAML path")
    plan.add_argument("--out", type=Path, help="results directory the run would use (its data/ folder is searched)")
    plan.add_argument(
        "--workers",
        type=int,
        help="cells in parallel for the wall-time estimate (default: what `run` would use on this machine)",
    )
    plan.add_argument(
        "--measure",
        action="store_true",
        help="time one update of each agent on this machine's backend (a minute or two) and cache it",
    )
    _add_selection(plan)
    plan.set_defaults(func=plan_command)

    status = actions.add_parser("status", help="done / running / failed / pending per cell, and totals")
    status.add_argument("--out", type=Path, required=True, help="results directory")
    status.add_argument(
        "--preset", help="only this preset's cells; a preset found here (name or YAML) also lists runs not yet started"
    )
    status.set_defaults(func=status_command)

    compare = actions.add_parser("compare", help="our results beside the published tables")
    compare.add_argument("--published", default="fidec-paper", help="published result set (default: fidec-paper)")
    compare.add_argument("--out", type=Path, help="results directory; without it, print the published cells")
    compare.add_argument("--preset", help="only runs of this preset")
    compare.add_argument(
        "--method",
        default="FiDec",
        help="method whose published per-task cells are printed after the comparison (default: FiDec)",
    )
    compare.add_argument("--reps", type=int, default=1000, help="bootstrap repetitions (default: 1000)")
    compare.add_argument(
        "--report-dir",
        type=Path,
        help="write the CSV tables here (default: OUT/comparison; a read-only OUT is only read)",
    )
    compare.set_defaults(func=compare_command)

    report = actions.add_parser("report", help="write DIR/report/report.md and index.html with figures and videos")
    report.add_argument("--out", type=Path, required=True, help="results directory")
    report.add_argument("--published", default="fidec-paper", help="published result set (default: fidec-paper)")
    report.add_argument("--preset", help="only runs of this preset")
    report.add_argument("--reps", type=int, default=1000, help="bootstrap repetitions (default: 1000)")
    report.add_argument(
        "--report-dir", type=Path, help="write the report here (default: OUT/report; OUT itself is only read)"
    )
    report.set_defaults(func=report_command)

    export = actions.add_parser(
        "export",
        help="copy a results directory's store and run files (no checkpoints or data) into a folder to commit or share",
        description="Writes TO/results.sqlite (one compact file) and the metric CSVs, videos and figures its runs "
        "registered, with relative paths: `fidec leaderboard report --out TO` rebuilds the report from it anywhere.",
    )
    export.add_argument("--out", type=Path, required=True, help="results directory to export")
    export.add_argument("--to", type=Path, required=True, help="folder to write (replaced as a whole when complete)")
    export.add_argument("--preset", help="only runs of this preset")
    export.set_defaults(func=export_command)

    quick = subparsers.add_parser(
        "quickstart",
        help="run the quick preset (toy landscapes + a small generated cube-single dataset), then compare and report",
    )
    quick.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_RESULTS / "quickstart",
        help="results directory (default: results/quickstart)",
    )
    quick.add_argument("--workers", type=int, help="cells in parallel (default: min(2, CPUs))")
    quick.add_argument("--backend", choices=["local", "ray"], default="local")
    quick.add_argument("--preset", default="quick", help=argparse.SUPPRESS)
    quick.set_defaults(func=quickstart_command)


def _add_selection(parser) -> None:
    """Part of a preset: its cells keep their names and settings, so the rest can be run later into the same
    results directory (a grid larger than one sitting, one cell at a time)."""
    parser.add_argument("--agents", metavar="A,B", help="only these of the preset's agents")
    parser.add_argument(
        "--tasks", metavar="T,U", help="only these of the preset's tasks (IDs or category:/suite: selectors)"
    )
    parser.add_argument("--seeds", metavar="S,S", help="only these of the preset's seeds, e.g. 0 or 0,2")


def _selected_preset(args):
    """The preset of ``--preset``, narrowed to ``--agents/--tasks/--seeds`` when given."""
    from fidec_gym.eval.grid.leaderboard import load_preset

    preset = load_preset(args.preset)
    if args.agents is None and args.tasks is None and args.seeds is None:
        return preset

    def names(flag: str, text):
        listed = None if text is None else [part.strip() for part in text.split(",") if part.strip()]
        if listed is not None and not listed:
            raise ConfigError(f"{flag} {text!r}: name at least one, comma-separated")
        return listed

    seeds = names("--seeds", args.seeds)
    if seeds is not None:
        try:
            seeds = [int(seed) for seed in seeds]
        except ValueError:
            raise ConfigError(f"--seeds {args.seeds!r}: give seed numbers, comma-separated (e.g. 0,2)") from None
    return preset.narrowed(names("--agents", args.agents), names("--tasks", args.tasks), seeds)


def _at_least_one(flag: str, value) -> None:
    """A count option (--workers, --reps) given on the command line must be >= 1."""
    if value is not None and value < 1:
        raise ConfigError(f"{flag} must be at least 1, got {value}")


def _directory_to_write(flag: str, path) -> None:
    """An output folder option must not name an existing file (it would be replaced by a folder)."""
    if path is not None and Path(path).expanduser().exists() and not Path(path).expanduser().is_dir():
        raise ConfigError(f"{flag} {path} is a file, not a directory; pass a directory to write into")


def plan_command(args) -> int:
    from fidec_gym.backend import default_workers
    from fidec_gym.eval.grid.plan import format_plan, make_plan

    _at_least_one("--workers", args.workers)
    preset = _selected_preset(args)
    data_dir = (args.out or DEFAULT_RESULTS / preset.name).expanduser() / "data"
    plan = make_plan(preset, data_dir, measure=args.measure)
    print(format_plan(plan, workers=args.workers or default_workers()))
    return 0


def run_command(args) -> int:
    from fidec_gym.eval.grid.leaderboard import run_leaderboard

    if args.dry_run:
        args.measure = False
        return plan_command(args)
    preset = _selected_preset(args)
    out = (args.out or DEFAULT_RESULTS / preset.name).expanduser().resolve()
    print(f"preset {preset.name}: {len(preset.cells())} cells -> {out}", file=sys.stderr)
    result = run_leaderboard(
        preset,
        out,
        backend=args.backend,
        workers=args.workers,
        ray_address=args.ray_address,
        retry_failed=args.retry_failed,
        progress=not args.no_progress,
        seeds_together=args.seeds_together,
    )
    print(
        f"{len(result.done)} cells finished now, {len(result.skipped)} skipped (finished or failed before), "
        f"{len(result.failed)} failed, {len(result.held)} held by another process, of {result.total}"
    )
    for cell, message in result.failed.items():
        print(f"  failed: {cell}: {message.splitlines()[0] if message else ''}")
    for cell, message in result.held.items():
        print(f"  skipped: {cell}: {message}")
    if result.held:
        print(
            f"{len(result.held)} cells are being trained by another `fidec leaderboard run` on {out}; they were left "
            f"to it. Watch them with `fidec leaderboard status --out {out}`; if that process is stopped, run this "
            "command again to finish them (a dead process's cells are taken over)"
        )
    if result.skipped_failed:
        print(
            f"{len(result.skipped_failed)} cells failed in an earlier run and were not retried; after fixing the "
            f"cause, run them again with `fidec leaderboard run --preset {args.preset} --out {out} --retry-failed`"
        )
    print(f"inspect with `fidec leaderboard status --out {out}`; compare with `fidec leaderboard compare --out {out}`")
    if not result.ok:
        return 1
    return HELD_EXIT_CODE if result.held else 0


def status_command(args) -> int:
    from fidec_gym.eval.grid.leaderboard import leaderboard_status
    from fidec_gym.eval.paper.text import markdown_table

    name, cells = _preset_cells(args.preset)
    rows, totals = leaderboard_status(args.out, preset=name, preset_cells=cells)
    header = ["cell", "state", "done", "running", "interrupted", "failed", "pending", "updates"]
    statuses = header[2:-1]
    print(markdown_table(header, [[r["cell"], r["state"], *(r[s] for s in statuses), _updates(r)] for r in rows]))
    for row in rows:
        for message in row["messages"]:
            print(f"  {row['cell']}: {message}")
    print(
        f"\ncells: {totals['cells_done']}/{totals['cells']} done; runs: {totals['done']} done, {totals['running']} "
        f"running, {totals['interrupted']} interrupted, {totals['failed']} failed, {totals['pending']} pending; "
        f"updates: {_updates(totals)}"
    )
    return 0


def _preset_cells(name):
    """``--preset``'s name and cells when it names a preset here (built-in or a YAML path); a name known only from
    the store (a preset file elsewhere) filters the runs without cells."""
    from fidec_gym.eval.grid.leaderboard import LeaderboardError, load_preset

    if name is None:
        return None, None
    try:
        preset = load_preset(name)
    except (LeaderboardError, ResultsNotFoundError):
        return name, None
    return preset.name, preset.cells()


def _updates(counts: dict) -> str:
    """'255K/300K (85 %)': updates trained of the budget (a run counts up to its last checkpoint)."""
    from fidec_gym.text import format_steps

    share = f" ({100 * counts['trained'] / counts['budget']:.0f} %)" if counts["budget"] else ""
    return f"{format_steps(counts['trained'])}/{format_steps(counts['budget'])}{share}"


def compare_command(args) -> int:
    from fidec_gym.eval.paper.compare import compare
    from fidec_gym.eval.paper.published import load_published
    from fidec_gym.eval.paper.text import aggregate_rows, category_rows, markdown_table, published_text, task_rows

    _at_least_one("--reps", args.reps)
    _directory_to_write("--report-dir", args.report_dir)
    published = load_published(args.published)
    if args.out is None:
        print(published_text(published, args.method))
        return 0
    store = _open_existing_store(args.out)
    comparison = compare(store, published, preset=args.preset, reps=args.reps)
    if comparison.empty:
        print(f"no finished runs in {args.out}; the published cells are:\n")
        print(published_text(published, args.method))
        return 0
    print("Per task (ours: mean ± std over seeds, percentile-bootstrap 95% CI of the mean)\n")
    print(markdown_table(*task_rows(comparison.tasks)))
    print("\nPer category (mean of per-task means; std across seeds of per-seed category means)\n")
    print(markdown_table(*category_rows(comparison.categories)))
    if not comparison.aggregates.empty:
        print(
            f"\nAggregates over {len(comparison.aggregate_tasks)} tasks run by every agent (scores / 100, "
            "stratified bootstrap 95% CIs)\n"
        )
        print(markdown_table(*aggregate_rows(comparison.aggregates)))
    if not comparison.improvement.empty:
        print("\nProbability of improvement P(X > Y) over tasks and runs\n")
        print(
            markdown_table(
                ["X", "Y", "P(X > Y)", "95% CI"],
                [
                    [r.agent_x, r.agent_y, f"{r.probability:.3f}", f"[{r.ci_low:.3f}, {r.ci_high:.3f}]"]
                    for r in comparison.improvement.itertuples(index=False)
                ],
            )
        )
    # The paper's own cells close the comparison, including tasks this results directory did not run.
    print(f"\nThe published {args.method} cells ({args.published}):\n")
    print(published_text(published, args.method))
    if args.report_dir is None and store.read_only:
        print(
            f"\ntables not written: {args.out} is read-only; pass --report-dir DIR to write them elsewhere",
            file=sys.stderr,
        )
        return 0
    target = args.report_dir.expanduser() if args.report_dir is not None else Path(args.out) / "comparison"
    paths = comparison.write(target)
    print(f"\ntables written to {paths[0].parent}")
    return 0


def report_command(args) -> int:
    from fidec_gym.eval.paper.published import load_published
    from fidec_gym.eval.paper.report import build_report

    _at_least_one("--reps", args.reps)
    _directory_to_write("--report-dir", args.report_dir)
    store = _open_existing_store(args.out)
    report_dir = None if args.report_dir is None else args.report_dir.expanduser()
    index = build_report(
        store, load_published(args.published), preset=args.preset, reps=args.reps, report_dir=report_dir
    )
    print(f"report: {index.parent / 'report.md'}\nopen: {index}")
    return 0


def export_command(args) -> int:
    from fidec_gym.eval.grid.export import export_results

    _open_existing_store(args.out)
    counts = export_results(args.out, args.to, preset=args.preset)
    print(
        f"exported {counts['runs']} runs, {counts['evaluations']} evaluations and {counts['files']} files to "
        f"{Path(args.to).expanduser().resolve()}; rebuild the report with "
        f"`fidec leaderboard report --out {args.to}`"
    )
    return 0


def quickstart_command(args) -> int:
    from fidec_gym.eval.grid.quickstart import quickstart

    index = quickstart(args.out, workers=args.workers, backend=args.backend, preset=args.preset)
    print(f"\nquickstart finished; open the report: {index}")
    return 0


def _open_existing_store(out: Path):
    from fidec_gym.eval.store import DB_FILENAME, ResultsStore

    if not (Path(out) / DB_FILENAME).is_file():
        raise DataNotFoundError(
            f"no results in {out} (no {DB_FILENAME}); run a preset first: "
            f"`fidec leaderboard run --preset smoke --out {out}`"
        )
    return ResultsStore.open_for_reading(out)  # compare and report only read the results
