"""``fidec data``: generate, download, check and describe offline datasets."""

from __future__ import annotations

import json
import os

from fidec_gym.errors import ConfigError


def _default_data_dir() -> str:
    return os.environ.get("FIDEC_DATA_DIR") or "~/.ogbench/data"


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="generate, download, check or describe datasets")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    actions.required = True

    generate = actions.add_parser(
        "generate",
        help="make a dataset locally: OGBench manipulation 'play' (oracles), OGBench locomotion 'navigate' and D4RL "
        "antmaze (a trained expert)",
        description="Manipulation and navigate data: writes <dataset>.npz, <dataset>-val.npz (episodes // 10, at "
        "least 1) and <dataset>.meta.json atomically. D4RL antmaze (e.g. antmaze-large-diverse): writes <task>.hdf5 in "
        "D4RL's legacy layout and <task>.meta.json. The data depends on --seed only, not on --workers. Locomotion "
        "data needs an expert (the shipped ant expert by default; `fidec experts list`).",
    )
    generate.add_argument(
        "dataset",
        help="e.g. cube-single-play, scene-play, visual-cube-single-play, antmaze-large-navigate, "
        "antmaze-giant-navigate, antmaze-large-diverse, antmaze-umaze",
    )
    generate.add_argument(
        "--episodes", type=int, default=None, help="training episodes (default: OGBench's/D4RL's count, e.g. 1000)"
    )
    generate.add_argument("--workers", type=int, default=1, help="processes generating episodes in parallel")
    generate.add_argument("--out", default=None, help="output directory (default $FIDEC_DATA_DIR or ~/.ogbench/data)")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--visual", action="store_true", help="64x64 pixel observations (slow on CPU)")
    generate.add_argument(
        "--max-episode-steps",
        type=int,
        default=None,
        help="rows per episode (OGBench: 1001, giant/humanoid mazes 2001; D4RL antmaze: the horizon, 700 or 1000)",
    )
    generate.add_argument("--expert", default=None, help="locomotion: expert zip or directory (default: shipped)")
    generate.add_argument("--noise", type=float, default=None, help="locomotion: Gaussian action noise (default 0.2)")
    generate.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    generate.set_defaults(func=run)

    download = actions.add_parser("download", help="fetch official OGBench files (train + val); needs network")
    download.add_argument("dataset", help="dataset name (e.g. antmaze-large-navigate-v0) or a task ID")
    download.add_argument("--out", default=None, help="target directory (default $FIDEC_DATA_DIR or ~/.ogbench/data)")
    download.add_argument("--timeout", type=float, default=10.0, help="socket timeout in seconds")
    download.set_defaults(func=run)

    check = actions.add_parser("check", help="validate a dataset file or a task's dataset; exit 0 only when sound")
    check.add_argument("target", metavar="PATH_OR_ID", help="an OGBench .npz, a D4RL .hdf5, or a task ID")
    check.add_argument("--split", choices=["train", "val"], default="train", help="split to check for a task ID")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(func=run)

    info = actions.add_parser("info", help="load a task's dataset and print its summary and metadata")
    info.add_argument("env_id")
    info.add_argument("--path", default=None, help="dataset file or directory to look in first")
    info.add_argument("--split", choices=["train", "val"], default="train")
    info.add_argument("--download", action="store_true", help="fetch missing OGBench files from the official server")
    info.set_defaults(func=run)


def run(args) -> int:
    return {"generate": _generate, "download": _download, "check": _check, "info": _info}[args.data_command](args)


def _generate(args) -> int:
    from fidec_gym.envs.locomotion.d4rl_antmaze import parse_d4rl_antmaze
    from fidec_gym.envs.locomotion.navigate import parse_navigate_dataset

    out = _writable_directory(args.out or _default_data_dir())
    locomotion = {"expert": args.expert, "progress": not args.no_progress, "max_episode_steps": args.max_episode_steps}
    if args.noise is not None:
        locomotion["noise"] = args.noise
    if parse_navigate_dataset(args.dataset) or parse_d4rl_antmaze(args.dataset):
        if args.visual:
            raise ConfigError("--visual is not supported for locomotion data (pixel navigate data takes days on CPU)")
        if parse_d4rl_antmaze(args.dataset):
            from fidec_gym.envs.locomotion.d4rl_antmaze import generate_d4rl_antmaze_dataset

            path = generate_d4rl_antmaze_dataset(
                args.dataset, args.episodes, out, workers=args.workers, seed=args.seed, **locomotion
            )
            print(f"wrote {path}\ncheck it with: fidec data check {path}")
            return 0
        from fidec_gym.envs.locomotion.navigate import generate_navigate_dataset

        train_path, val_path = generate_navigate_dataset(
            args.dataset, args.episodes, out, workers=args.workers, seed=args.seed, **locomotion
        )
        print(f"wrote {train_path}\nwrote {val_path}")
        print(f"check it with: fidec data check {train_path}")
        return 0
    if args.expert is not None or args.noise is not None:
        raise ConfigError("--expert and --noise apply to locomotion datasets only (navigate, D4RL antmaze)")
    from fidec_gym.envs.generate import generate_manipulation_dataset

    train_path, val_path = generate_manipulation_dataset(
        args.dataset,
        1000 if args.episodes is None else args.episodes,
        out,
        workers=args.workers,
        seed=args.seed,
        visual=args.visual,
        progress=not args.no_progress,
        max_episode_steps=1001 if args.max_episode_steps is None else args.max_episode_steps,
    )
    print(f"wrote {train_path}\nwrote {val_path}")
    print(f"check it with: fidec data check {train_path}")
    return 0


def _writable_directory(path) -> str:
    """Create the output directory now, so that a bad --out fails with one line before any work starts."""
    from pathlib import Path

    from fidec_gym.errors import ResultsPermissionError

    directory = Path(path).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ResultsPermissionError(
            f"cannot create the output directory {directory} ({error.strerror or error}); choose a writable "
            "directory with --out (or set $FIDEC_DATA_DIR)"
        ) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ResultsPermissionError(f"the output directory {directory} is not writable; choose another with --out")
    return str(directory)


def _download(args) -> int:
    from fidec_gym.envs.catalogue import all_tasks
    from fidec_gym.envs.readers.ogbench_npz import download

    name = args.dataset.strip()
    spec = all_tasks().get(name if name.startswith("fidec/") else f"fidec/{name}")
    if spec is not None:
        if spec.suite not in ("ogbench", "visual"):
            raise ConfigError(f"{spec.env_id} is a {spec.suite} task; only OGBench datasets are downloaded here")
        name = spec.dataset
    known = {s.dataset for s in all_tasks().values() if s.suite in ("ogbench", "visual")}
    if name not in known:
        raise ConfigError(f"unknown OGBench dataset {name!r}; known: {', '.join(sorted(known))}")
    train_path, val_path = download(name, args.out or _default_data_dir(), timeout=args.timeout)
    print(f"downloaded {train_path}\ndownloaded {val_path}")
    return 0


def _check(args) -> int:
    from fidec_gym.envs.check import check_dataset

    report = check_dataset(args.target, split=args.split)
    if args.json:
        print(
            json.dumps(
                {
                    "target": report.target,
                    "kind": report.kind,
                    "ok": report.ok,
                    "problems": report.problems,
                    "warnings": report.warnings,
                    "summary": report.summary,
                },
                indent=2,
                default=str,
            )
        )
    else:
        print(report.format())
    return 0 if report.ok else 1


def _info(args) -> int:
    from fidec_gym.envs.check import describe
    from fidec_gym.envs.datasets import load_dataset

    dataset = load_dataset(args.env_id, path=args.path, split=args.split, allow_download=args.download)
    summary = describe(dataset)
    summary["reward_convention"] = dataset.metadata.get("reward_convention")
    print(json.dumps(summary, indent=2, default=str))
    return 0
