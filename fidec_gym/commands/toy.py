"""``fidec toy-study``: train BC, FQL, DeFlow and every FiDec preset on the six 2-D toy landscapes and measure the
paper's geometric claims (docs/toy_study.md)."""

from __future__ import annotations

from pathlib import Path

from fidec_gym.errors import DataNotFoundError

CRITIC_CHOICES = ("learned", "oracle", "both")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "toy-study",
        help="train the agents on the 2-D toy landscapes and measure the paper's geometric claims",
        description="Trains BC, FQL, DeFlow and the FiDec presets (paper, official, local, isotropic, plus the "
        "Fisher-time and evaluation-point sweeps) on the toy landscapes with the ordinary training loop, "
        "scores 10,000 policy samples per run, and writes OUT/toy_metrics.csv, "
        "OUT/toy_preset_metrics.csv, OUT/toy_claims.csv, figures and the report. Re-running resumes.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 seed, no sweeps, 2x64 networks, batch 128, 600 updates (under 10 minutes on 2 cores)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("results/toy-study"), help="results directory (default: results/toy-study)"
    )
    parser.add_argument("--seeds", type=int, default=None, help="seeds per configuration (default 3; quick 1)")
    parser.add_argument("--steps", type=int, default=None, help="training updates per run (default 2000; quick 600)")
    parser.add_argument(
        "--critic", choices=CRITIC_CHOICES, default="both", help="learned critic, analytic oracle Q, or both (default)"
    )
    parser.add_argument(
        "--landscapes", nargs="+", metavar="KEY", default=None, help="subset of T1..T6 (default: all six)"
    )
    parser.add_argument(
        "--agents",
        nargs="+",
        metavar="NAME",
        default=None,
        help="subset of the study's agents, e.g. bc fql deflow fidec-paper fidec-local-scaled",
    )
    parser.add_argument("--no-sweeps", action="store_true", help="skip the t_f and local evaluation-point sweeps")
    parser.add_argument("--workers", type=int, default=None, help="parallel training processes (default 2)")
    parser.add_argument(
        "--target-divergence",
        type=float,
        default=None,
        help="trust-region size delta of DeFlow and FiDec (default 0.01)",
    )
    parser.add_argument(
        "--compile-cache",
        default="default",
        help="JAX compilation cache directory (default ~/.cache/fidec-gym/jax-compilation; 'none' to disable)",
    )
    parser.add_argument(
        "--outputs-only",
        action="store_true",
        help="train nothing; rebuild the CSVs, claims, figures and report from OUT",
    )
    parser.add_argument("--no-report", action="store_true", help="do not build OUT/report at the end")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def build_config(args):
    """The study config from the parsed arguments (quick defaults first, explicit flags win)."""
    from fidec_gym.errors import ConfigError
    from fidec_gym.eval.toy.study import MAIN_VARIANTS, VARIANTS, ToyStudyConfig

    changes = {}
    if args.seeds is not None:
        changes["seeds"] = args.seeds
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.workers is not None:
        changes["workers"] = args.workers
    if args.target_divergence is not None:
        changes["target_divergence"] = args.target_divergence
    changes["critics"] = ("learned", "oracle") if args.critic == "both" else (args.critic,)
    if args.landscapes:
        changes["landscapes"] = tuple(key.upper() for key in args.landscapes)
    if args.agents:
        unknown = [name for name in args.agents if name not in VARIANTS]
        if unknown:
            raise ConfigError(f"unknown toy-study agent(s) {unknown}; choose from {list(VARIANTS)}")
        changes["variants"] = tuple(args.agents)
    elif args.no_sweeps:
        changes["variants"] = MAIN_VARIANTS
    changes["progress"] = not args.no_progress
    config = ToyStudyConfig.quick(**changes) if args.quick else ToyStudyConfig(**changes)
    try:
        config.validate()
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return config


def run(args) -> int:
    from fidec_gym.eval.store import DB_FILENAME, ResultsStore
    from fidec_gym.eval.toy.figures import write_study_outputs
    from fidec_gym.eval.toy.study import run_toy_study

    config = build_config(args)
    cache = None if str(args.compile_cache).lower() == "none" else args.compile_cache
    if args.outputs_only:
        if not (Path(args.out).expanduser() / DB_FILENAME).is_file():  # only reads: no store is made here
            raise DataNotFoundError(
                f"{args.out} holds no toy-study results (no {DB_FILENAME}); run `fidec toy-study --out {args.out}` "
                "first"
            )
        files = write_study_outputs(ResultsStore(args.out))
        if not files:
            raise DataNotFoundError(
                f"{args.out} holds no toy-study results; run `fidec toy-study --out {args.out}` first"
            )
    else:
        result = run_toy_study(config, args.out, compile_cache=cache)
        files = result.files
        print(
            f"toy study: {result.ran} run(s) trained, {result.skipped} already finished, {len(result.failures)} failed"
        )
        for task, message in result.failures:
            print(f"  failed: {task.variant} on {task.landscape} (critic {task.critic}, seed {task.seed}): {message}")
    for name, path in files.items():
        if not name.startswith("figure_"):
            print(f"{name}: {path}")
    if args.no_report:
        print(f"report: fidec leaderboard report --out {args.out}")
        return 0
    from fidec_gym.eval.paper.report import build_report, register_section
    from fidec_gym.eval.toy.figures import report_section

    register_section(report_section)
    index = build_report(ResultsStore(args.out), None, title=f"fidec-gym toy study: {args.out}")
    print(f"report: {index.parent / 'report.md'}\nopen: {index}")
    return 0
