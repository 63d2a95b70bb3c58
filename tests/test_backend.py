"""JAX picks its backend: nothing in the package forces the CPU, and workers that share an accelerator do not each
preallocate most of its memory."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from fidec_gym import backend

ROOT = Path(__file__).resolve().parent.parent


def test_no_module_sets_jax_platforms():
    pattern = re.compile(
        r"""(environ\[["']JAX_PLATFORMS["']\]\s*=|environ\.setdefault\(["']JAX_PLATFORMS|"""
        r"""jax_platforms?["'],)"""
    )
    offending = [
        str(path.relative_to(ROOT))
        for folder in ("agents", "envs", "eval", "fidec_gym")
        for path in (ROOT / folder).rglob("*.py")
        if pattern.search(path.read_text())
    ]
    assert not offending, f"these modules force a JAX platform: {offending}"


@pytest.fixture
def accelerator(monkeypatch):
    """As on a GPU machine: a CUDA plugin installed, JAX_PLATFORMS unset."""
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    monkeypatch.setattr(
        backend.importlib.util, "find_spec", lambda name, *args: object() if name == "jax_cuda12_plugin" else None
    )


def test_workers_share_an_accelerator_without_forcing_the_cpu(accelerator):
    assert backend.installed_accelerator_plugin() == "gpu"
    assert backend.default_workers(cpu_count=16) == 2
    backend.prepare_worker_environment(2)
    assert "JAX_PLATFORMS" not in os.environ
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"


def test_the_grid_prepares_workers_without_touching_the_platform(accelerator, tmp_path, monkeypatch):
    """The local pool's set-up, as a leaderboard run does it, on a simulated GPU machine."""
    from fidec_gym.eval.grid import leaderboard

    seen = {}

    class NoPool:  # stands in for the worker processes: records the environment they would inherit
        def __init__(self, fn, workers, **options):
            seen.update(os.environ)

        def run(self, items):
            yield from ()

    monkeypatch.setattr(leaderboard, "WorkerPool", NoPool)
    cells = leaderboard.load_preset("smoke").cells()
    list(leaderboard._run_local(cells, tmp_path, {cell.name: [] for cell in cells}, None, None))
    assert "JAX_PLATFORMS" not in seen and seen["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"


def test_a_cpu_machine_keeps_the_defaults(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")  # the user's choice is respected: no accelerator then
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    assert backend.installed_accelerator_plugin() is None
    backend.prepare_worker_environment(2)
    assert "XLA_PYTHON_CLIENT_PREALLOCATE" not in os.environ


def test_the_code_version_is_asked_of_git_once_per_program_tree(monkeypatch):
    # Workers inherit $FIDEC_CODE_VERSION instead of forking git from a process that runs JAX's threads.
    import subprocess

    from fidec_gym.eval.run import config

    monkeypatch.delenv(config.CODE_VERSION_ENV, raising=False)
    first = config.code_version()
    assert first.startswith("0.") and os.environ[config.CODE_VERSION_ENV] == first

    def no_fork(*args, **kwargs):
        raise AssertionError("git was run again")

    monkeypatch.setattr(subprocess, "run", no_fork)
    assert config.code_version() == first
