"""Every example in README.md runs as written, with step counts shrunk so the suite stays fast: the Python blocks
run in one namespace, and each `fidec ...` line of the shell blocks runs as a command (the set-up lines, which
install, are not run here; CI runs them)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SKIPPED = ("bash scripts/install.sh", "pip install", "python -m pytest")
# Smaller budgets for the same commands: (pattern, replacement).
SHRINK = [
    (r"^(fidec data generate .*)--episodes \d+", r"\1--episodes 2 --max-episode-steps 30"),
    (r"^(fidec data generate antmaze-\w+-diverse.*)$", r"\1 --episodes 1 --max-episode-steps 30"),
    (
        r"^(fidec train .*)--steps \d+",
        r"\1--steps 20 --eval-interval 10 --eval-episodes 2 --log-interval 10 "
        r"--checkpoint-interval 10 --set actor_hidden_dims=[16,16] --set value_hidden_dims=[16,16] --set batch_size=16",
    ),
    (r"^(fidec experts train .*)--steps \d+", r"\1--steps 300 --eval-every 150 --eval-episodes 1"),
    (r"^fidec record (.*)$", r"fidec record \1 --max-steps 3 --size 32"),
    (r"^fidec eval (.*)$", r"fidec eval \1 --episodes 2"),
    (r"^fidec bench agents(.*)$", r"fidec bench agents\1 --agents bc --steps 2 --rounds 1 --out {tmp}/bench"),
    (r"--preset smoke", "--preset {tmp}/smoke.yaml"),
]
NEEDS_NETWORK = ("fidec data download",)


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)


def shell_commands() -> list[str]:
    commands = []
    for block in blocks("bash"):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith(SKIPPED):
                commands.append(line)
    return commands


def test_python_blocks_run():
    namespace: dict = {}
    for block in blocks("python"):
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102  (the README's own examples)
    assert namespace["actions"].shape == (4, 2)


@pytest.fixture
def tiny_smoke(tmp_path):
    smoke = (Path(__file__).resolve().parent.parent / "leaderboards" / "presets" / "smoke.yaml").read_text()
    for key, value in (
        ("offline_steps", 20),
        ("eval_interval", 10),
        ("eval_episodes", 2),
        ("log_interval", 10),
        ("checkpoint_interval", 10),
    ):
        smoke = re.sub(rf"^{key}: .*$", f"{key}: {value}", smoke, flags=re.M)
    smoke = smoke.replace("agents: [bc, iql, rebrac, fql, deflow, fidec]", "agents: [bc, fql]")
    smoke = smoke.replace("[64, 64]", "[16, 16]").replace("name: smoke", "name: smoke")
    (tmp_path / "smoke.yaml").write_text(smoke)
    return tmp_path


def test_shell_blocks_run(tiny_smoke, monkeypatch):
    tmp = tiny_smoke
    environment = {**os.environ, "HOME": str(tmp), "XDG_CACHE_HOME": str(tmp / "cache"), "PYTHONUNBUFFERED": "1"}
    commands = shell_commands()
    assert any(command.startswith("fidec train") for command in commands)
    for command in commands:
        if command.startswith("export "):
            name, _, value = command[len("export ") :].partition("=")
            environment[name] = os.path.expanduser(value.replace("~", str(tmp)))
            continue
        for pattern, replacement in SHRINK:
            command = re.sub(pattern, replacement.replace("{tmp}", str(tmp)), command)
        command = re.sub(r"\$(\w+)", lambda match: environment.get(match.group(1), ""), command)
        for part in command.split(" && "):
            argv = shlex.split(part)
            assert argv[0] == "fidec", f"README example is not a fidec command: {part}"
            result = subprocess.run(
                [sys.executable, "-m", "fidec_gym.cli", *argv[1:]],
                cwd=tmp,
                env=environment,
                capture_output=True,
                text=True,
                timeout=600,
            )
            if part.startswith(NEEDS_NETWORK):  # no network here: a clear one-line error, fast
                assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
                continue
            assert result.returncode == 0, f"{part}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
