"""``fidec train``, ``fidec eval`` and ``fidec record``: train an agent, evaluate a checkpoint, record videos."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

from fidec_gym.errors import ConfigError


def parse_overrides(pairs: list[str] | None) -> dict:
    """``["key=value", ...]`` to a dict; values are parsed as YAML (numbers, booleans, lists such as [64,64])."""
    import yaml

    from fidec_gym.errors import ConfigError

    overrides = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value (e.g. --set actor_hidden_dims=[64,64]), got {pair!r}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(
                f"--set {pair!r}: cannot parse the value ({error}); quote strings, write lists as [a,b]"
            ) from None
        if isinstance(value, str):
            value = _number(value)  # YAML 1.1 reads 1e-4 and 1e30 as text; on a command line they are numbers
        overrides[key.strip()] = tuple(value) if isinstance(value, list) else value
    return overrides


def _number(text: str):
    """``text`` as an int or float when it spells one with digits (``1e-4``, ``3E5``), else unchanged."""
    if not any(character.isdigit() for character in text):
        return text  # "nan", "inf", "infinity" stay words
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def register(subparsers) -> None:
    train = subparsers.add_parser(
        "train",
        help="train an agent on a task (offline, optionally online), with evaluations and checkpoints",
        description="Train an agent. Results go to OUT/results.sqlite and OUT/runs/<agent>__<task>__seed<S>/ "
        "(metrics.csv, summary.json, checkpoints/, videos/).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_arguments(train)
    train.add_argument(
        "--seeds",
        default=None,
        metavar="N|S,S,...",
        help="train several seeds in one compiled program (vmapped): a count (--seeds 8 = seeds 0..7) "
        "or a list (--seeds 0,1,2); replaces --seed",
    )
    train.add_argument(
        "--updates-per-call",
        type=int,
        default=100,
        help="with --seeds: updates per compiled dispatch (lax.scan length)",
    )
    train.add_argument(
        "--sampling",
        choices=["auto", "device", "host"],
        default="auto",
        help="with --seeds: draw batches inside the compiled step from the dataset in device memory, "
        "or on the host (auto: device unless it does not fit, or pixels)",
    )
    train.add_argument("--resume", action="store_true", help="continue from the run's newest checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=run_train)

    evaluate = subparsers.add_parser("eval", help="evaluate a checkpoint and print its metrics")
    _checkpoint_arguments(evaluate)
    evaluate.add_argument("--episodes", type=int, default=50)
    evaluate.add_argument("--workers", type=int, default=None, help="evaluation processes (default: one per core)")
    evaluate.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="sampling temperature (0: BC/IQL/ReBRAC act with their mean; flow agents ignore it)",
    )
    evaluate.add_argument("--videos", type=int, default=0, metavar="N", help="also record N mp4 roll-outs")
    evaluate.add_argument("--frame-skip", type=int, default=1)
    evaluate.add_argument("--out", default=None, help="directory for videos (default: videos/ beside the checkpoint)")
    evaluate.add_argument("--json", action="store_true", help="print the full result as JSON")
    evaluate.set_defaults(func=run_eval)

    record = subparsers.add_parser("record", help="record mp4 roll-outs of a checkpoint")
    _checkpoint_arguments(record)
    record.add_argument("--episodes", type=int, default=1)
    record.add_argument("--frame-skip", type=int, default=1, help="keep every K-th frame")
    record.add_argument("--max-steps", type=int, default=None, help="cut episodes after this many steps")
    record.add_argument("--size", type=int, default=256, help="frame size in pixels for state tasks (default 256)")
    record.add_argument("--out", default=None, help="output directory (default: videos/ beside the checkpoint)")
    record.set_defaults(func=run_record)


def _checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="agent file, checkpoint directory or run directory (its newest checkpoint is used)",
    )
    parser.add_argument("--env", required=True, help="task ID to run the agent on")
    parser.add_argument("--seed", type=int, default=0)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field, with its help text, default and bounds taken from the field."""
    from fidec_gym.eval.run.config import TrainConfig

    for item in dataclasses.fields(TrainConfig):
        flag = item.metadata.get("flag") or "--" + item.name.replace("_", "-")
        help_text = item.metadata["help"]
        kind = item.type.split("|")[0].strip()
        if item.name == "agent_overrides":
            parser.add_argument(
                "--set",
                dest="overrides",
                action="append",
                metavar="KEY=VALUE",
                help=f"{help_text}; repeatable (e.g. --set alpha=3 --set actor_hidden_dims=[64,64])",
            )
        elif kind == "bool":
            if item.default:
                parser.add_argument(
                    "--no-" + flag[2:],
                    dest=item.name,
                    action="store_false",
                    help=f"do not {help_text[0].lower()}{help_text[1:]}",
                )
            else:
                parser.add_argument(flag, dest=item.name, action="store_true", help=help_text)
        else:
            required = item.name in ("agent", "env_id")
            parser.add_argument(
                flag,
                dest=item.name,
                type=int if kind == "int" else str,
                required=required,
                default=None if required else item.default,
                choices=item.metadata.get("choices"),
                help=help_text,
            )


def config_from_args(args: argparse.Namespace):
    from fidec_gym.eval.run.config import TrainConfig

    values = {
        item.name: getattr(args, item.name)
        for item in dataclasses.fields(TrainConfig)
        if item.name != "agent_overrides"
    }
    return TrainConfig(**values, agent_overrides=parse_overrides(args.overrides))


def run_train(args) -> int:
    from fidec_gym.eval.run.config import resolve_run

    run = resolve_run(config_from_args(args))  # every setting checked before anything is written
    if args.resume:
        _say_when_nothing_to_resume(args, run)
    if args.seeds is not None:
        return _train_seeds(args, run)
    from fidec_gym.eval.run.trainer import train

    result = train(run, resume=args.resume, progress=not args.no_progress)
    summary = result.summary
    print(
        f"{result.status}: {run.config.agent} on {summary['env_id']} seed {run.config.seed}: score "
        f"{summary['score']:.2f} ({summary['unit']}; {summary['score_rule']})"
    )
    print(f"run directory: {result.run_dir}")
    if result.status != "done":
        print(summary.get("message", ""), file=sys.stderr)
        return 1
    return 0


def _say_when_nothing_to_resume(args, run) -> None:
    """--resume where no checkpoint exists starts the run from step 0 (so "run it again with --resume" also works
    after an interruption before the first checkpoint); say so, in case --out or a setting has a typo."""
    from fidec_gym.eval.run.checkpoint import latest_checkpoint
    from fidec_gym.eval.run.config import run_directory
    from fidec_gym.eval.run.vmapped import parse_seeds

    seeds = parse_seeds(args.seeds) if args.seeds is not None else [run.config.seed]
    run_dirs = [run_directory(run.results_dir, run.config.agent, run.spec.name, seed, run.cell) for seed in seeds]
    if not any(latest_checkpoint(run_dir) for run_dir in run_dirs):
        where = run_dirs[0] if len(run_dirs) == 1 else run_dirs[0].parent
        print(f"--resume: no checkpoint in {where}: starting a new run", file=sys.stderr)


def _train_seeds(args, run) -> int:
    from fidec_gym.eval.run.multiseed import train_seeds
    from fidec_gym.eval.run.vmapped import parse_seeds

    seeds = parse_seeds(args.seeds)
    results = train_seeds(
        run.config,
        seeds,
        resume=args.resume,
        progress=not args.no_progress,
        updates_per_call=args.updates_per_call,
        sampling=args.sampling,
    )
    for seed, result in zip(seeds, results):
        summary = result.summary
        print(
            f"{result.status}: {run.config.agent} on {summary['env_id']} seed {seed}: score {summary['score']:.2f} "
            f"({summary['unit']}; {summary['score_rule']}); {result.run_dir}"
        )
        if result.status != "done":
            print(summary.get("message", ""), file=sys.stderr)
    return 0 if all(result.status == "done" for result in results) else 1


def _load_checkpoint(path: str, env_id: str):
    """The agent behind ``path`` and its trainer metadata; checks that it fits the task's spaces."""
    from fidec_gym.agents import load_agent
    from fidec_gym.envs.catalogue import task_info
    from fidec_gym.eval.run.checkpoint import checkpoint_metadata, resolve_agent_file

    spec = task_info(env_id)
    agent_file = resolve_agent_file(path)
    agent = load_agent(str(agent_file))
    meta = checkpoint_metadata(agent_file)
    action_dim = agent.config.get("action_dim")
    observation_shape = tuple(agent.config.get("observation_shape") or ())
    expected = tuple(spec.observation_shape)
    fits = action_dim == spec.action_shape[0] and (
        observation_shape == expected or (spec.suite == "visual" and observation_shape[:2] == expected[:2])
    )  # pixel stacks add channels
    if not fits:
        trained_on = meta.get("env_id", "another task")
        raise ConfigError(
            f"the agent in {agent_file} was trained on {trained_on} (observations {observation_shape}, actions "
            f"{action_dim}) and cannot act in {spec.env_id} (observations {expected}, actions "
            f"{spec.action_shape[0]}); pass a checkpoint trained on a task with the same spaces"
        )
    return agent, agent_file, meta


def _run_dir(agent_file: Path, meta: dict) -> Path | None:
    """The run directory of a trainer checkpoint (RUN_DIR/checkpoints/step_N/agent.msgpack), else None."""
    return agent_file.parent.parent.parent if meta else None


def _video_dir(args, agent_file: Path, meta: dict) -> Path:
    if args.out:
        return Path(args.out)
    run_dir = _run_dir(agent_file, meta)
    return (run_dir if run_dir is not None else agent_file.parent) / "videos"


def _register_videos(agent_file: Path, meta: dict, paths: list) -> None:
    """Record videos as artefacts of their run when the checkpoint belongs to a results directory."""
    from fidec_gym.eval.run.config import results_dir_of
    from fidec_gym.eval.store import DB_FILENAME, ResultsStore

    run_dir = _run_dir(agent_file, meta)
    if run_dir is None:
        return
    results_dir = Path(meta.get("results_dir") or results_dir_of(run_dir))
    if not (results_dir / DB_FILENAME).exists():
        return
    store = ResultsStore(results_dir)
    run = store.find_run(agent=meta.get("agent"), env_id=meta.get("env_id"), seed=int(meta.get("seed", 0)))
    if run is not None:
        for path in paths:
            store.add_artefact(run["id"], "video", str(path), step=meta.get("step"))
    store.close()


def run_eval(args) -> int:
    from fidec_gym.eval.run.evaluate import check_evaluation_settings, evaluate

    check_evaluation_settings(args.episodes, args.workers, args.temperature, args.videos, args.frame_skip)
    agent, agent_file, meta = _load_checkpoint(args.checkpoint, args.env)
    result = evaluate(
        agent,
        args.env,
        args.episodes,
        args.seed,
        num_workers=args.workers,
        temperature=args.temperature,
        video_dir=_video_dir(args, agent_file, meta) if args.videos else None,
        video_episodes=args.videos,
        frame_skip=args.frame_skip,
        agent_name=agent.name,
        step=int(meta.get("step", 0)),
        progress=True,
    )
    _register_videos(agent_file, meta, result.get("videos", []))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{agent.name} ({agent_file}) on {args.env}, {result['num_episodes']} episodes, seed {args.seed}")
    for key in ("success", "normalized_score", "return", "length"):
        mean, std = result[key], result[f"{key}_std"]
        if not math.isnan(mean):
            print(f"  {key:>16}: {mean:10.4f} ± {std:.4f}")
    for path in result.get("videos", []):
        print(f"  video: {path}")
    return 0


def run_record(args) -> int:
    from fidec_gym.eval.run.evaluate import make_policy
    from fidec_gym.eval.run.video import check_recording_settings, check_video_support, record_episodes

    check_recording_settings(args.episodes, args.frame_skip, args.max_steps, args.size)
    check_video_support(args.env)  # toy tasks: clear message before loading anything
    agent, agent_file, meta = _load_checkpoint(args.checkpoint, args.env)
    paths = record_episodes(
        make_policy(agent, args.seed),
        args.env,
        args.episodes,
        _video_dir(args, agent_file, meta),
        seed=args.seed,
        agent_name=agent.name,
        step=int(meta.get("step", 0)),
        frame_skip=args.frame_skip,
        max_episode_steps=args.max_steps,
        size=args.size,
    )
    _register_videos(agent_file, meta, paths)
    for path in paths:
        print(path)
    return 0
