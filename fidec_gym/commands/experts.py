"""``fidec experts``: train, list, export and evaluate the locomotion experts that drive the maze data generators
(docs/datasets.md §2.3)."""

from __future__ import annotations

import json
import shlex
import sys


def register(subparsers) -> None:
    from fidec_gym.envs.locomotion.online import ONLINE_TASKS

    names = ", ".join(f"{k} ({v.ogbench_id}, OGBench {v.ogbench_steps:,} steps)" for k, v in ONLINE_TASKS.items())
    parser = subparsers.add_parser("experts", help="train, list or evaluate locomotion experts (stable-baselines3 SAC)")
    actions = parser.add_subparsers(dest="experts_command", metavar="ACTION")
    actions.required = True

    train = actions.add_parser(
        "train",
        help="train an expert with SAC on OGBench's online locomotion task (resumable)",
        description=f"Environments: {names}. Writes OUT/expert.zip (stable-baselines3 format) and OUT/expert.json "
        "(provenance); checkpoints (model + replay buffer) go to OUT/checkpoint every --checkpoint-every steps.",
    )
    train.add_argument("env", choices=sorted(ONLINE_TASKS), help="online task")
    train.add_argument("--steps", type=int, default=None, help="total environment steps (default: OGBench's budget)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--out", default=None, help="run directory (default $FIDEC_EXPERTS_DIR/<env> or ~/.fidec/experts/<env>)"
    )
    train.add_argument("--eval-every", type=int, default=25_000, help="evaluate the deterministic policy every K steps")
    train.add_argument("--eval-episodes", type=int, default=5, help="episodes per evaluation (0: none)")
    train.add_argument("--checkpoint-every", type=int, default=10_000, help="save model + replay buffer every K steps")
    train.add_argument("--learning-starts", type=int, default=None, help="random-action steps first (OGBench: 10000)")
    train.add_argument("--max-episode-steps", type=int, default=None, help="episode length (default: the env's, 1000)")
    train.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.set_defaults(func=run)

    listing = actions.add_parser("list", help="show the shipped and user-trained experts with their provenance")
    listing.add_argument("--dir", action="append", default=[], help="also look in this directory (repeatable)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=run)

    export = actions.add_parser("export", help="write expert.zip/expert.json from a run's latest checkpoint")
    export.add_argument("out", help="the run directory (holding checkpoint/)")
    export.set_defaults(func=run)

    evaluate = actions.add_parser(
        "evaluate",
        help="success rate of expert + maze planner on a maze's evaluation goals",
        description="OGBench mazes (e.g. antmaze-large-navigate): the five singletask goals with the BFS subgoal "
        "oracle; D4RL mazes (e.g. antmaze-large-diverse-v2): the evaluation goal with the Q-iteration waypoint "
        "controller. Prints JSON; --record adds the result to the expert's expert.json.",
    )
    evaluate.add_argument("maze", help="antmaze-{medium,large,giant,teleport}-navigate or antmaze-*-v2")
    evaluate.add_argument("--expert", default=None, help="expert zip or directory (default: the shipped ant expert)")
    evaluate.add_argument("--episodes", type=int, default=50, help="episodes in total (spread over the tasks)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--noise", type=float, default=0.0, help="Gaussian action noise (0: the expert alone)")
    evaluate.add_argument("--workers", type=int, default=1)
    evaluate.add_argument("--record", action="store_true", help="store the result in expert.json (maze_success)")
    evaluate.set_defaults(func=run)


def run(args) -> int:
    return {"train": _train, "list": _list, "export": _export, "evaluate": _evaluate}[args.experts_command](args)


def _train(args) -> int:
    from fidec_gym.envs.locomotion.expert_training import train_expert

    out = train_expert(
        args.env,
        steps=args.steps,
        seed=args.seed,
        out=args.out,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        progress=not args.no_progress,
        threads=args.threads,
        learning_starts=args.learning_starts,
        max_episode_steps=args.max_episode_steps,
        command="fidec " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else None,
    )
    info = json.loads((out / "expert.json").read_text())
    print(json.dumps({k: info.get(k) for k in ("name", "steps", "seed", "wall_seconds", "final_evaluation")}, indent=2))
    print(f"wrote {out / 'expert.zip'} and {out / 'expert.json'}")
    return 0


def _list(args) -> int:
    from fidec_gym.envs.locomotion.experts import list_experts, user_experts_dir

    rows = list_experts(tuple(args.dir))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no experts found (shipped or in {user_experts_dir()}); train one with `fidec experts train ant`")
        return 0
    for row in rows:
        ret = "-" if row["mean_return"] is None else f"{row['mean_return']:.1f}"
        steps = "-" if row["steps"] is None else f"{row['steps']:,}"
        sb3 = (row.get("library") or {}).get("stable-baselines3")
        print(
            f"{row['origin']:<8} {row['name']:<9} {row['status']:<22} steps {steps:>10}  seed {row['seed']}  "
            f"eval return {ret:>8}  hours {row['wall_hours']}  sb3 {sb3}\n         {row['path']}"
        )
        for maze, result in (row.get("maze_success") or {}).items():
            print(f"         {maze}: success {result.get('success_rate')} over {result.get('episodes')} episodes")
    return 0


def _export(args) -> int:
    from fidec_gym.envs.locomotion.expert_training import export_checkpoint

    out = export_checkpoint(args.out)
    print(f"wrote {out / 'expert.zip'} and {out / 'expert.json'}")
    return 0


def _evaluate(args) -> int:
    from fidec_gym.envs.locomotion.evaluate import evaluate_maze_success

    result = evaluate_maze_success(
        args.maze,
        expert=args.expert,
        episodes=args.episodes,
        seed=args.seed,
        noise=args.noise,
        workers=args.workers,
        record=args.record,
    )
    print(json.dumps(result, indent=2))
    return 0
