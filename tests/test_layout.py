"""The house rules: one import namespace that no research checkout can shadow, the layering between packages, no
import circles, no agent importing another, no module past ~500 lines."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "fidec_gym": ROOT / "fidec_gym",
    "fidec_gym.agents": ROOT / "agents",
    "fidec_gym.envs": ROOT / "envs",
    "fidec_gym.eval": ROOT / "eval",
}
MAX_LINES = 550  # "~500": a module this long is a sign to split it by responsibility


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def top_level_imports(path: Path, name: str) -> set[str]:
    """Modules imported when ``name`` is imported (module-level statements, not imports inside functions)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    imported = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            imported.add(base)
            imported.update(f"{base}.{alias.name}" for alias in node.names)
    return imported


def test_no_import_circle_between_modules():
    known = modules()
    graph = {
        name: {m for m in top_level_imports(path, name) if m in known and m != name} for name, path in known.items()
    }
    # Importing a submodule first imports its parent packages.
    for name in known:
        parent = name.rpartition(".")[0]
        while parent:
            if parent in known and parent != name:
                graph[name].add(parent)
            parent = parent.rpartition(".")[0]
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1 and not node.startswith(nxt + ".") and not nxt.startswith(node + "."):
                cycle = stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt]
                if not all(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(cycle, cycle[1:])):
                    cycles.append(" -> ".join(cycle))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_layering():
    """agents imports neither envs nor eval; envs imports no agents and no eval (module level and in functions)."""
    offences = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        forbidden = {
            "fidec_gym.agents": ("fidec_gym.envs", "fidec_gym.eval"),
            "fidec_gym.envs": ("fidec_gym.agents", "fidec_gym.eval"),
        }
        for package, banned in forbidden.items():
            if name.startswith(package):
                offences += [f"{name} imports {m}" for m in imported if m.startswith(banned)]
    assert not offences, "\n".join(offences)


def test_no_module_is_too_long():
    long = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert not {n: c for n, c in long.items() if c > MAX_LINES}, f"split these by responsibility: {long}"


def test_a_checkout_with_its_own_agents_and_envs_packages_does_not_shadow_fidec_gym(tmp_path):
    """The field's research code keeps agents/ and envs/ at its top level; fidec-gym must import beside them."""
    for package in ("agents", "envs", "eval", "utils"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("raise ImportError('the research checkout, not fidec-gym')\n")
    script = textwrap.dedent("""
        import fidec_gym, gymnasium as gym
        env = gym.make("fidec/toy-bimodal-v0")
        from fidec_gym.eval.run.config import TrainConfig
        from fidec_gym.eval.run.trainer import train
        result = train(TrainConfig(agent="bc", env_id="fidec/toy-bimodal-v0", offline_steps=5, eval_interval=5,
                                   eval_episodes=2, log_interval=5, checkpoint_interval=5, results_dir="out",
                                   agent_overrides={"actor_hidden_dims": [8, 8], "batch_size": 8}), progress=False)
        import agents, sys
    """)
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300
    )
    # fidec-gym trained through its Python API; the local `agents` package is still the checkout's own.
    assert "the research checkout, not fidec-gym" in result.stderr, result.stderr[-3000:]
    assert "train(" not in result.stderr.split("Traceback")[-1] or "import agents" in result.stderr
    assert (tmp_path / "out" / "results.sqlite").is_file()


@pytest.mark.parametrize("banned", ["from agents", "from envs", "from eval", "import agents", "import envs"])
def test_no_module_uses_the_bare_folder_names(banned):
    offending = [
        str(path.relative_to(ROOT))
        for path in modules().values()
        if any(
            line.lstrip().startswith(banned + ".") or line.lstrip().startswith(banned + " ")
            for line in path.read_text().splitlines()
        )
    ]
    assert not offending, f"import through fidec_gym.*: {offending}"
