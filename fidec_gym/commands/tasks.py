"""``fidec tasks``: list task IDs and show one task's facts."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    parser = subparsers.add_parser("tasks", help="list task IDs, or show one task's facts")
    parser.add_argument("env_id", nargs="?", help="show this task's catalogue entry as JSON")
    parser.add_argument("--suite", choices=["ogbench", "visual", "d4rl", "toy"])
    parser.add_argument("--category")
    parser.set_defaults(func=run)


def run(args) -> int:
    from fidec_gym.envs.catalogue import list_tasks, task_info

    if args.env_id is not None:  # an empty ID is an unknown task, not "list them all"
        print(json.dumps(task_info(args.env_id).as_dict(), indent=2))
        return 0
    for env_id in list_tasks(suite=args.suite, category=args.category):
        print(env_id)
    return 0
