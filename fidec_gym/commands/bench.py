"""``fidec bench <target>``: benchmarks that measure speed (never asserted in tests).

Each target lives in ``eval/bench/`` (``agents.py``, ``data.py``, ``evaluation.py``) and exposes
``add_arguments(parser)`` and ``run(args) -> int``.
Those modules keep heavy imports inside ``run`` so that building the parser stays cheap.
"""

from __future__ import annotations

import importlib

TARGETS = {
    "agents": "ms per update of every agent (paper and small sizes, vmap and update_n columns)",
    "data": "data generation throughput with 1 and 2 workers (manipulation, navigate, D4RL antmaze)",
    "eval": "evaluation episodes/s: vector env versus one env",
    "seeds": "ms per update per seed with N seeds in one compiled program versus one seed alone",
}

# `fidec bench eval` lives in evaluation.py (a module named eval would shadow the builtin in tracebacks).
BENCH_MODULES = {"eval": "evaluation"}


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark and write its table as CSV/JSON")
    targets = parser.add_subparsers(dest="target", metavar="TARGET")
    targets.required = True
    for name, description in TARGETS.items():
        module = importlib.import_module(f"fidec_gym.eval.bench.{BENCH_MODULES.get(name, name)}")
        target_parser = targets.add_parser(name, help=description, description=description)
        module.add_arguments(target_parser)
        target_parser.set_defaults(func=module.run)
