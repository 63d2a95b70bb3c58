#!/usr/bin/env python
"""Bad-input audit: run a fixed list of wrong inputs through the real ``fidec`` command line and the Python API and
write what each one printed as a Markdown table (default ``docs/bad_inputs.md``).

Every case runs in a subprocess (``python -m fidec_gym.cli ...``, or ``python -c SNIPPET`` for the API) with a
timeout, inside a fresh temporary directory, with ``HOME``, ``FIDEC_DATA_DIR``, ``FIDEC_EXPERTS_DIR``, the caches and
``TMPDIR`` pointed into it, so nothing of the user is read or touched. The bad files (npz in OGBench's layout, hdf5
in D4RL's, presets, checkpoints) are made here with numpy/h5py; one real 2-step training run on a toy task provides a
results directory and a checkpoint to corrupt.

A case PASSES when it exits with the expected non-zero code (2 for bad input, the command line's convention; 1 where a
command reports a problem as its result, e.g. ``data check``), prints a short message that names the problem (the
words listed with the case), and shows no Python traceback. API snippets run inside ``try/except FidecError`` (and
Gymnasium's own ``gymnasium.error.Error`` for ``gym.make``), print ``ClassName: message`` and exit with the error's
exit code; any other exception escapes with its traceback, which is what the command line does for a bug. A few
inputs are accepted on purpose (e.g. ``train --resume`` with nothing to resume starts a new run and says so): those
cases expect exit 0 and carry a note in the table.

The read-only results directory is a ``chmod 555`` folder. Root ignores file modes, so when the audit runs as root
those cases run without the capabilities that let root do so (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER are
dropped from the bounding set before exec; switching to another user would lose access to a Python installed under
/root); where that is impossible they are skipped with a note.

Rebuild the table with ``python scripts/bad_inputs.py`` (``--only WORD`` runs the cases whose id contains WORD).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "docs" / "bad_inputs.md"
TIMEOUT = 60.0
TRACEBACK = "Traceback (most recent call last)"
TOY = "fidec/toy-bimodal-v0"
CUBE = "fidec/cube-single-play-singletask-task2-v0"  # dataset cube-single-play-v0: observations (28,), actions (5,)
CUBE_DATA = "cube-single-play-v0"
ANT = "fidec/antmaze-umaze-v2"  # D4RL dataset antmaze-umaze-v2: observations (29,), actions (8,)
ANT_DATA = "antmaze-umaze-v2"
VISUAL = "fidec/visual-cube-single-play-singletask-task2-v0"
FIX = "results-fixture"  # the real 2-step run: $T/results-fixture/runs/bc__toy-bimodal-v0__seed0
RUN = f"{FIX}/runs/bc__toy-bimodal-v0__seed0"
A_FILE_TEXT = "I am a file, not a directory\n"
TINY = ["--set", "batch_size=8", "--set", "actor_hidden_dims=[8,8]"]
TRAIN_TOY = ["train", "--agent", "bc", "--env", TOY, "--no-progress"]


@dataclass
class Case:
    id: str
    group: str
    argv: Optional[list[str]] = None  # fidec arguments; "$T" stands for the audit's temporary directory
    code: Optional[str] = None  # a Python snippet (the API); the variable T is the temporary directory
    expect: tuple[str, ...] = ()  # words the output must contain (case-insensitive): the problem is named
    codes: tuple[int, ...] = (2,)  # accepted exit codes
    setup: Optional[Callable[[Path], None]] = None  # prepares files of this case only
    unprivileged: bool = False  # run where file permissions apply (root: without CAP_DAC_OVERRIDE)
    note: str = ""


@dataclass
class Outcome:
    case: Case
    rc: Optional[int]
    message: str
    traceback: bool
    verdict: str
    seconds: float
    reasons: list[str] = field(default_factory=list)


# ==================================================================================================== fixtures
def _npz(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as stream:
        np.savez(stream, **arrays)


def _cube_arrays(n: int = 40, obs_dim: int = 28, act_dim: int = 5) -> dict:
    """OGBench's raw layout for cube-single-play-v0 (two episodes of 20 rows)."""
    rng = np.random.default_rng(0)
    terminals = np.zeros(n, dtype=np.float32)
    terminals[n // 2 - 1] = terminals[-1] = 1
    return {
        "observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        "terminals": terminals,
        "qpos": np.zeros((n, 21), dtype=np.float32),
        "qvel": np.zeros((n, 20), dtype=np.float32),
    }


def _h5(path: Path, arrays: dict, groups: tuple[str, ...] = ()) -> None:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        for key, value in arrays.items():
            handle.create_dataset(key, data=value)
        for group in groups:
            handle.create_group(group)


def _ant_arrays(n: int = 40, obs_dim: int = 29, act_dim: int = 8) -> dict:
    """D4RL's legacy layout for antmaze-umaze-v2."""
    rng = np.random.default_rng(0)
    timeouts = np.zeros(n, dtype=bool)
    timeouts[n // 2 - 1] = timeouts[-1] = True
    return {
        "observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        "rewards": np.zeros(n, dtype=np.float32),
        "terminals": np.zeros(n, dtype=bool),
        "timeouts": timeouts,
    }


def _truncate(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])


def make_datasets(t: Path) -> None:
    """One directory per bad dataset, the file named as the task expects (so `data check` infers the task)."""
    d = t / "ds"
    good = _cube_arrays()
    _npz(d / "npz-good" / f"{CUBE_DATA}.npz", **good)
    (d / "npz-garbage").mkdir(parents=True)
    (d / "npz-garbage" / f"{CUBE_DATA}.npz").write_bytes(os.urandom(4096))
    (d / "npz-empty").mkdir()
    (d / "npz-empty" / f"{CUBE_DATA}.npz").write_bytes(b"")
    _truncate(d / "npz-good" / f"{CUBE_DATA}.npz", d / "npz-truncated" / f"{CUBE_DATA}.npz")
    _npz(d / "npz-no-actions" / f"{CUBE_DATA}.npz", **{k: v for k, v in good.items() if k != "actions"})
    _npz(d / "npz-misshaped" / f"{CUBE_DATA}.npz", **dict(good, observations=good["observations"][:, :27]))
    nan = good["observations"].copy()
    nan[3, 2] = np.nan
    _npz(d / "npz-nan" / f"{CUBE_DATA}.npz", **dict(good, observations=nan))
    _npz(d / "npz-nan-actions" / f"{CUBE_DATA}.npz", **dict(good, actions=np.full_like(good["actions"], np.nan)))
    _npz(d / "npz-lengths" / f"{CUBE_DATA}.npz", **dict(good, actions=good["actions"][:30]))
    _npz(d / "npz-zero-rows" / f"{CUBE_DATA}.npz", **{k: v[:0] for k, v in good.items()})
    _npz(d / "npz-1d-obs" / f"{CUBE_DATA}.npz", **dict(good, observations=good["observations"][:, 0]))
    _npz(d / "npz-strings" / f"{CUBE_DATA}.npz", **dict(good, observations=np.array(["x"] * 40)))
    _npz(d / "npz-scalar-actions" / f"{CUBE_DATA}.npz", **dict(good, actions=np.float32(0.5)))
    _npz(
        d / "npz-object" / f"{CUBE_DATA}.npz",
        **dict(good, observations=np.array([None] * 40, dtype=object)),  # needs pickle to read
    )
    _npz(d / "npz-no-terminal-end" / f"{CUBE_DATA}.npz", **dict(good, terminals=np.zeros(40, dtype=np.float32)))
    (d / "npz-bad-member").mkdir()
    with (
        zipfile.ZipFile(d / "npz-good" / f"{CUBE_DATA}.npz") as archive,
        zipfile.ZipFile(d / "npz-bad-member" / f"{CUBE_DATA}.npz", "w") as broken,
    ):
        for name in archive.namelist():  # a zip whose members are not .npy arrays
            broken.writestr(name, b"not an npy array")
    (d / "dir.npz").mkdir()
    (d / "notes.txt").write_text("these are not the droids\n")
    (d / "noext").write_bytes(os.urandom(64))

    ant = _ant_arrays()
    _h5(d / "h5-good" / f"{ANT_DATA}.hdf5", ant)
    (d / "h5-garbage").mkdir()
    (d / "h5-garbage" / f"{ANT_DATA}.hdf5").write_bytes(os.urandom(4096))
    (d / "h5-empty").mkdir()
    (d / "h5-empty" / f"{ANT_DATA}.hdf5").write_bytes(b"")
    _truncate(d / "h5-good" / f"{ANT_DATA}.hdf5", d / "h5-truncated" / f"{ANT_DATA}.hdf5")
    _h5(d / "h5-no-actions" / f"{ANT_DATA}.hdf5", {k: v for k, v in ant.items() if k != "actions"})
    _h5(d / "h5-misshaped" / f"{ANT_DATA}.hdf5", dict(ant, observations=ant["observations"][:, :28]))
    nan = ant["observations"].copy()
    nan[5] = np.nan
    _h5(d / "h5-nan" / f"{ANT_DATA}.hdf5", dict(ant, observations=nan))
    _h5(d / "h5-nan-rewards" / f"{ANT_DATA}.hdf5", dict(ant, rewards=np.full(40, np.nan, dtype=np.float32)))
    _h5(d / "h5-rewards-2d" / f"{ANT_DATA}.hdf5", dict(ant, rewards=np.zeros((40, 2), dtype=np.float32)))
    _h5(d / "h5-lengths" / f"{ANT_DATA}.hdf5", dict(ant, actions=ant["actions"][:25]))
    _h5(d / "h5-zero-rows" / f"{ANT_DATA}.hdf5", {k: v[:0] for k, v in ant.items()})
    _h5(
        d / "h5-obs-group" / f"{ANT_DATA}.hdf5",
        {k: v for k, v in ant.items() if k != "observations"},
        groups=("observations",),
    )
    _h5(d / "h5-strings" / f"{ANT_DATA}.hdf5", dict(ant, actions=np.array([b"a"] * 40)))
    _h5(d / "h5-scalar-obs" / f"{ANT_DATA}.hdf5", dict(ant, observations=np.float32(1.0)))


PRESETS = {
    "invalid-yaml": "agents: [bc\ntasks: {\n",
    "not-mapping": "- bc\n- iql\n",
    "scalar": "just a string\n",
    "empty": "",
    "unknown-key": "agnets: [bc]\ntasks: [fidec/toy-bimodal-v0]\n",
    "agents-not-list": "agents: bc\ntasks: [fidec/toy-bimodal-v0]\n",
    "unknown-agent": "agents: [bcc]\ntasks: [fidec/toy-bimodal-v0]\n",
    "agent-number": "agents: [1]\ntasks: [fidec/toy-bimodal-v0]\n",
    "duplicate-agents": "agents: [bc, bc]\ntasks: [fidec/toy-bimodal-v0]\n",
    "no-tasks": "agents: [bc]\n",
    "task-typo": "agents: [bc]\ntasks: [fidec/toy-bimodl-v0]\n",
    "task-number": "agents: [bc]\ntasks: [3]\n",
    "tasks-mapping": "agents: [bc]\ntasks: {a: 1}\n",
    "bad-category": "agents: [bc]\ntasks: ['category:nope']\n",
    "bad-suite": "agents: [bc]\ntasks: ['suite:nope']\n",
    "seeds-zero": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\nseeds: 0\n",
    "seeds-dup": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\nseeds: [0, 0]\n",
    "seeds-text": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\nseeds: abc\n",
    "seeds-negative": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\nseeds: [-1]\n",
    "seeds-float": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\nseeds: [0.5]\n",
    "steps-negative": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\noffline_steps: -1\n",
    "steps-text": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\noffline_steps: many\n",
    "steps-fraction": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\noffline_steps: 1.5\n",
    "steps-nan": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\noffline_steps: .nan\n",
    "steps-list": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\noffline_steps: [1, 2]\n",
    "steps-zero": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\noffline_steps: 0\n",
    "eval-interval-zero": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\neval_interval: 0\n",
    "bool-text": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\nuse_task_hyperparameters: maybe\n",
    "divergence-table": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\ndivergence_table: papr\n",
    "overrides-agent": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\nagent_overrides: {bcc: {lr: 0.1}}\n",
    "overrides-key": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\nagent_overrides: {all: {batch_sise: 64}}\n",
    "overrides-zero": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\nagent_overrides: {bc: {batch_size: 0}}\n",
    "overrides-nan": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\nagent_overrides: {bc: {lr: .nan}}\n",
    "overrides-dims": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\nagent_overrides: {bc: {actor_hidden_dims: 64}}\n",
    "overrides-list": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\nagent_overrides: [bc]\n",
    "overrides-inner-list": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\nagent_overrides: {bc: [1, 2]}\n",
    "suite-settings-list": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\nsuite_settings: [toy]\n",
    "suite-unknown": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\nsuite_settings: {toys: {seeds: 1}}\n",
    "suite-seeds": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\nsuite_settings: {toy: {seeds: [-1]}}\n",
    "suite-null": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\nsuite_settings: {toy: null}\n",
    "dataset-unknown": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\ndatasets: {cube-singel-play-v0: {path: x}}\n",
    "dataset-path-number": f"agents: [bc]\ntasks: [{CUBE}]\ndatasets: {{{CUBE_DATA}: {{path: 5}}}}\n",
    "dataset-path-list": f"agents: [bc]\ntasks: [{CUBE}]\ndatasets: {{{CUBE_DATA}: {{path: [a, b]}}}}\n",
    "dataset-entry-text": f"agents: [bc]\ntasks: [{CUBE}]\ndatasets: {{{CUBE_DATA}: here}}\n",
    "dataset-both": f"agents: [bc]\ntasks: [{CUBE}]\ndatasets: {{{CUBE_DATA}: {{path: x, generate: {{}}}}}}\n",
    "generate-episodes": f"agents: [bc]\ntasks: [{CUBE}]\ndatasets: {{{CUBE_DATA}: {{generate: {{episodes: -1}}}}}}\n",
    "generate-text": f"agents: [bc]\ntasks: [{CUBE}]\ndatasets: {{{CUBE_DATA}: {{generate: {{episodes: lots}}}}}}\n",
    "generate-workers": f"agents: [bc]\ntasks: [{CUBE}]\ndatasets: {{{CUBE_DATA}: {{generate: {{workers: 0}}}}}}\n",
    "generate-not-mapping": f"agents: [bc]\ntasks: [{CUBE}]\ndatasets: {{{CUBE_DATA}: {{generate: 100}}}}\n",
    "datasets-list": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\ndatasets: [a]\n",
    "exclude-text": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\nexclude: bc\n",
    "exclude-key": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\nexclude: [{agnet: bc}]\n",
    "exclude-all": "agents: [bc]\ntasks: [fidec/toy-bimodal-v0]\nexclude: [{agent: bc}]\n",
    "name-slash": "name: a/b\nagents: [bc]\ntasks: [fidec/toy-bimodal-v0]\n",
    "visual-online": f"agents: [bc]\ntasks: [{VISUAL}]\nonline_steps: 10\n",
}


def make_presets(t: Path) -> None:
    directory = t / "presets"
    directory.mkdir()
    for name, text in PRESETS.items():
        (directory / f"{name}.yaml").write_text(text)
    (directory / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (directory / "folder.yaml").mkdir()


def make_files(t: Path) -> None:
    (t / "empty-dir").mkdir()
    (t / "a-file").write_text(A_FILE_TEXT)
    (t / "garbage-results").mkdir()
    (t / "garbage-results" / "results.sqlite").write_bytes(os.urandom(8192))
    (t / "empty-results").mkdir()
    (t / "empty-results" / "results.sqlite").write_bytes(b"")
    (t / "garbage.msgpack").write_bytes(os.urandom(512))
    (t / "garbage.zip").write_bytes(os.urandom(512))
    (t / "readonly").mkdir()
    (t / "readonly").chmod(0o555)
    import msgpack

    (t / "foreign.msgpack").write_bytes(msgpack.packb({"hello": "world"}))
    (t / "expert-run" / "checkpoint").mkdir(parents=True)
    (t / "expert-run" / "checkpoint" / "model.zip").write_bytes(os.urandom(256))


def restore_shared(t: Path) -> None:
    """Put back the shared files a previous case may have changed (a command that wrongly accepted a file as its
    output directory, say), so that every case sees the same inputs."""
    for name in ("empty-dir", "readonly/res", "readonly/data", "readonly/lb"):
        path = t / name
        if name == "empty-dir" and path.is_dir() and not any(path.iterdir()):
            continue
        (t / "readonly").chmod(0o755)
        shutil.rmtree(path, ignore_errors=True)
        if name == "empty-dir":
            path.mkdir()
    (t / "readonly").chmod(0o555)
    for name in ("nope", "nope.npz", "nope.zip", "nope.msgpack", "nope.yaml", "exported"):
        path = t / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    path = t / "a-file"
    if not path.is_file() or path.read_text() != A_FILE_TEXT:
        shutil.rmtree(path, ignore_errors=True)
        path.unlink(missing_ok=True)
        path.write_text(A_FILE_TEXT)


def make_fixture_run(t: Path, env: dict) -> str:
    """A real 2-step run (tiny BC on a toy task): a results store and two checkpoints to break. '' when it worked."""
    argv = [*TRAIN_TOY, "--steps", "2", *_small_run_flags(), *TINY, "--out", str(t / FIX)]
    result = subprocess.run(
        [sys.executable, "-m", "fidec_gym.cli", *argv], cwd=t / "work", env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    if result.returncode != 0:
        return f"fixture run failed (exit {result.returncode}): {result.stderr[-500:]}"
    return ""


def _small_run_flags() -> list[str]:
    return [
        "--eval-interval", "1", "--eval-episodes", "1", "--eval-workers", "1", "--log-interval", "1",
        "--checkpoint-interval", "1",
    ]  # fmt: skip


def _copy_run(t: Path, name: str) -> Path:
    """A private copy of the fixture results directory (cases that could write to it)."""
    target = t / name
    if not target.exists():
        shutil.copytree(t / FIX, target)
    return target


def _checkpoints(results: Path) -> list[Path]:
    return sorted((results / RUN.split("/", 1)[1] / "checkpoints").glob("step_*"))


def setup_corrupt_trainer(t: Path) -> None:
    results = _copy_run(t, "res-corrupt-trainer")
    for checkpoint in _checkpoints(results):
        (checkpoint / "trainer.pkl").write_bytes(b"\x80\x05garbage")


def setup_truncated_agent(t: Path) -> None:
    results = _copy_run(t, "res-truncated-agent")
    for checkpoint in _checkpoints(results):
        data = (checkpoint / "agent.msgpack").read_bytes()
        (checkpoint / "agent.msgpack").write_bytes(data[: len(data) // 3])


def setup_trainer_not_dict(t: Path) -> None:
    import pickle

    results = _copy_run(t, "res-trainer-list")
    for checkpoint in _checkpoints(results):
        (checkpoint / "trainer.pkl").write_bytes(pickle.dumps([1, 2, 3]))


def setup_trainer_missing_keys(t: Path) -> None:
    import pickle

    results = _copy_run(t, "res-trainer-keys")
    for checkpoint in _checkpoints(results):
        (checkpoint / "trainer.pkl").write_bytes(pickle.dumps({"format_version": 1, "step": 1}))


def setup_bad_meta(t: Path) -> None:
    results = _copy_run(t, "res-bad-meta")
    for checkpoint in _checkpoints(results):
        (checkpoint / "meta.json").write_text("{not json")


def setup_copy(name: str) -> Callable[[Path], None]:
    return lambda t: _copy_run(t, name) and None


# ==================================================================================================== the cases
def _t(*parts: str) -> str:
    return "$T/" + "/".join(parts)


def cases() -> list[Case]:
    out: list[Case] = []

    def cli(case_id: str, group: str, argv: list[str], *expect: str, **kw) -> None:
        out.append(Case(case_id, group, argv=argv, expect=expect, **kw))

    def api(case_id: str, group: str, code: str, *expect: str, **kw) -> None:
        out.append(Case(case_id, group, code=textwrap.dedent(code).strip(), expect=expect, **kw))

    # ---------------------------------------------------------------- top level and tasks
    g = "cli"
    cli("cli-unknown-command", g, ["trian"], "invalid choice", "trian")
    cli("cli-no-command", g, [], "required")
    cli("tasks-typo", g, ["tasks", "fidec/cube-singel-play-singletask-task2-v0"], "cube-singel")
    cli("tasks-empty-id", g, ["tasks", ""], "task")
    cli("tasks-bad-suite", g, ["tasks", "--suite", "ogbenchh"], "invalid choice")
    cli("tasks-bad-category", g, ["tasks", "--category", "nonsense"], "nonsense")

    # ---------------------------------------------------------------- train: names and values
    g = "train"
    tt = TRAIN_TOY
    cli("train-no-args", g, ["train"], "required")
    cli("train-agent-typo", g, ["train", "--agent", "fqll", "--env", TOY], "fqll")
    cli("train-env-typo", g, ["train", "--agent", "bc", "--env", "fidec/toy-bimodl-v0"], "toy-bimodl")
    cli("train-env-empty", g, ["train", "--agent", "bc", "--env", ""], "task")
    cli("train-steps-negative", g, [*tt, "--steps", "-5"], "steps", "-5")
    cli("train-steps-zero", g, [*tt, "--steps", "0"], "steps")
    cli("train-steps-text", g, [*tt, "--steps", "abc"], "steps", "abc")
    cli("train-steps-float", g, [*tt, "--steps", "1e6"], "steps", "1e6")
    cli("train-seed-negative", g, [*tt, "--seed", "-1"], "seed")
    cli("train-eval-interval-zero", g, [*tt, "--eval-interval", "0"], "eval_interval")
    cli("train-eval-episodes-zero", g, [*tt, "--eval-episodes", "0"], "eval_episodes")
    cli("train-eval-workers-zero", g, [*tt, "--eval-workers", "0"], "eval_workers")
    cli("train-log-interval-negative", g, [*tt, "--log-interval", "-1"], "log_interval")
    cli("train-checkpoint-interval-zero", g, [*tt, "--checkpoint-interval", "0"], "checkpoint_interval")
    cli("train-online-steps-negative", g, [*tt, "--online-steps", "-1"], "online_steps")
    cli("train-online-visual", g, ["train", "--agent", "bc", "--env", VISUAL, "--online-steps", "10"], "pixel")
    cli("train-videos-negative", g, [*tt, "--videos", "-1"], "video")
    cli("train-frame-skip-zero", g, [*tt, "--frame-skip", "0"], "frame")
    cli("train-updates-per-dispatch-zero", g, [*tt, "--updates-per-dispatch", "0"], "updates_per_dispatch")
    cli("train-divergence-table", g, [*tt, "--divergence-table", "papr"], "invalid choice", "papr")
    cli("train-sampling", g, [*tt, "--sampling", "gpu"], "invalid choice")
    cli("train-set-unknown", g, [*tt, "--set", "foo=1"], "foo")
    cli("train-set-typo", g, [*tt, "--set", "batch_sise=64"], "batch_sise", "batch_size")
    cli("train-set-batch-zero", g, [*tt, "--set", "batch_size=0"], "batch_size")
    cli("train-set-batch-negative", g, [*tt, "--set", "batch_size=-3"], "batch_size")
    cli("train-set-batch-text", g, [*tt, "--set", "batch_size=abc"], "batch_size")
    cli("train-set-batch-list", g, [*tt, "--set", "batch_size=[1,2]"], "batch_size")
    cli("train-set-batch-float", g, [*tt, "--set", "batch_size=64.5"], "batch_size")
    cli("train-set-lr-nan", g, [*tt, "--set", "lr=nan"], "lr")
    cli("train-set-lr-yaml-nan", g, [*tt, "--set", "lr=.nan"], "lr")
    cli("train-set-lr-inf", g, [*tt, "--set", "lr=.inf"], "lr")
    cli("train-set-lr-negative", g, [*tt, "--set", "lr=-0.1"], "lr")
    cli("train-set-lr-mapping", g, [*tt, "--set", "lr={a: 1}"], "lr")
    cli("train-set-dims-number", g, [*tt, "--set", "actor_hidden_dims=64"], "actor_hidden_dims")
    cli("train-set-dims-negative", g, [*tt, "--set", "actor_hidden_dims=[64,-1]"], "actor_hidden_dims")
    cli("train-set-dims-empty", g, [*tt, "--set", "actor_hidden_dims=[]"], "actor_hidden_dims")
    cli("train-set-dims-text", g, [*tt, "--set", "actor_hidden_dims=[a,b]"], "actor_hidden_dims")
    cli("train-set-layer-norm-text", g, [*tt, "--set", "actor_layer_norm=maybe"], "actor_layer_norm")
    cli("train-set-discount", g, ["train", "--agent", "iql", "--env", TOY, "--set", "discount=1.5"], "discount")
    cli("train-set-flow-steps-zero", g, ["train", "--agent", "fql", "--env", TOY, "--set", "flow_steps=0"], "flow")
    cli("train-set-no-equals", g, [*tt, "--set", "batch_size"], "key=value")
    cli("train-set-empty-key", g, [*tt, "--set", "=5"], "key=value")
    cli("train-set-bad-yaml", g, [*tt, "--set", "lr=[1,"], "lr")
    cli("train-seeds-text", g, [*tt, "--seeds", "0,a"], "seeds")
    cli("train-seeds-duplicate", g, [*tt, "--seeds", "0,0"], "seeds")
    cli("train-seeds-negative", g, [*tt, "--seeds", "-1,2"], "seeds")
    cli("train-seeds-zero", g, [*tt, "--seeds", "0"], "seeds")
    cli("train-seeds-empty", g, [*tt, "--seeds", ""], "seeds")
    cli("train-seeds-float", g, [*tt, "--seeds", "1.5"], "seeds")
    cli("train-seeds-online", g, [*tt, "--seeds", "2", "--online-steps", "10"], "online")
    cli("train-updates-per-call-zero", g, [*tt, "--seeds", "2", "--updates-per-call", "0"], "updates")
    cli("train-dataset-missing", g, ["train", "--agent", "bc", "--env", CUBE, "--dataset", _t("nope.npz")], "nope.npz")
    cli("train-dataset-for-toy", g, [*tt, "--dataset", _t("ds", "npz-good")], "toy")
    cli("train-no-data", g, ["train", "--agent", "bc", "--env", CUBE], "fidec data generate")
    cli("train-no-d4rl-data", g, ["train", "--agent", "bc", "--env", ANT], "antmaze-umaze-v2")
    cli("train-out-is-file", g, [*tt, "--steps", "2", *TINY, "--out", _t("a-file")], "a-file")
    cli(
        "train-out-readonly", g, [*tt, "--steps", "2", *TINY, "--out", _t("readonly", "res")], "readonly",
        unprivileged=True,
    )  # fmt: skip

    # ---------------------------------------------------------------- train --resume, checkpoints, eval, record
    g = "checkpoint"
    small = ["--steps", "4", *_small_run_flags(), *TINY]
    cli(
        "train-resume-nothing", g, [*tt, "--resume", "--steps", "2", *TINY, "--out", _t("empty-dir", "res")],
        "no checkpoint", "starting a new run", codes=(0,),
        note="--resume without a checkpoint starts from step 0 and says so (the advice after an early Ctrl-C)",
    )  # fmt: skip
    cli(
        "train-resume-corrupt-trainer", g, [*tt, "--resume", *small, "--out", _t("res-corrupt-trainer")],
        "trainer.pkl", setup=setup_corrupt_trainer,
    )  # fmt: skip
    cli(
        "train-resume-truncated-agent", g, [*tt, "--resume", *small, "--out", _t("res-truncated-agent")],
        "agent.msgpack", setup=setup_truncated_agent,
    )  # fmt: skip
    cli(
        "train-resume-trainer-list", g, [*tt, "--resume", *small, "--out", _t("res-trainer-list")],
        "trainer.pkl", setup=setup_trainer_not_dict,
    )  # fmt: skip
    cli(
        "train-resume-trainer-keys", g, [*tt, "--resume", *small, "--out", _t("res-trainer-keys")],
        "trainer.pkl", setup=setup_trainer_missing_keys,
    )  # fmt: skip
    cli(
        "train-resume-other-settings", g,
        [*tt, "--resume", *small, "--set", "batch_size=16", "--out", _t("res-other")], "batch_size",
        setup=setup_copy("res-other"),
    )  # fmt: skip
    cli(
        "train-existing-run-no-resume", g, [*tt, *small, "--out", _t("res-existing")], "--resume",
        setup=setup_copy("res-existing"),
    )  # fmt: skip
    ck = ["--env", TOY]
    cli("eval-checkpoint-missing", g, ["eval", "--checkpoint", _t("nope"), *ck], "nope")
    cli("eval-checkpoint-empty-dir", g, ["eval", "--checkpoint", _t("empty-dir"), *ck], "empty-dir")
    cli("eval-checkpoint-garbage", g, ["eval", "--checkpoint", _t("garbage.msgpack"), *ck], "garbage.msgpack")
    cli("eval-checkpoint-foreign", g, ["eval", "--checkpoint", _t("foreign.msgpack"), *ck], "foreign.msgpack")
    cli("eval-checkpoint-text", g, ["eval", "--checkpoint", _t("ds", "notes.txt"), *ck], "notes.txt")
    cli(
        "eval-checkpoint-truncated", g, ["eval", "--checkpoint", _t("res-truncated-agent", *RUN.split("/")[1:]), *ck],
        "agent.msgpack", setup=setup_truncated_agent,
    )  # fmt: skip
    cli(
        "eval-checkpoint-bad-meta", g,
        ["eval", "--checkpoint", _t("res-bad-meta", *RUN.split("/")[1:]), "--env", CUBE], "cannot act",
        setup=setup_bad_meta,
    )  # fmt: skip
    run = _t(*RUN.split("/"))
    cli("eval-wrong-env", g, ["eval", "--checkpoint", run, "--env", CUBE], "cannot act")
    cli("eval-env-typo", g, ["eval", "--checkpoint", run, "--env", "fidec/toy-bimodl-v0"], "toy-bimodl")
    cli("eval-episodes-zero", g, ["eval", "--checkpoint", run, *ck, "--episodes", "0"], "episodes")
    cli("eval-episodes-negative", g, ["eval", "--checkpoint", run, *ck, "--episodes", "-3"], "episodes")
    cli("eval-workers-zero", g, ["eval", "--checkpoint", run, *ck, "--workers", "0"], "workers")
    cli("eval-temperature-nan", g, ["eval", "--checkpoint", run, *ck, "--temperature", "nan"], "temperature")
    cli("eval-temperature-negative", g, ["eval", "--checkpoint", run, *ck, "--temperature", "-1"], "temperature")
    cli("eval-videos-negative", g, ["eval", "--checkpoint", run, *ck, "--videos", "-1"], "videos")
    cli("eval-videos-toy", g, ["eval", "--checkpoint", run, *ck, "--videos", "1"], "video")
    cli("record-toy", g, ["record", "--checkpoint", run, *ck], "video")
    cli("record-checkpoint-missing", g, ["record", "--checkpoint", _t("nope"), "--env", CUBE], "nope")
    cli("record-size-zero", g, ["record", "--checkpoint", run, "--env", CUBE, "--size", "0"], "size")
    cli("record-episodes-zero", g, ["record", "--checkpoint", run, "--env", CUBE, "--episodes", "0"], "episodes")

    # ---------------------------------------------------------------- datasets through the CLI
    g = "data"
    npz = lambda kind: _t("ds", kind, f"{CUBE_DATA}.npz")  # noqa: E731
    h5 = lambda kind: _t("ds", kind, f"{ANT_DATA}.hdf5")  # noqa: E731
    for kind, words in [
        ("npz-garbage", ("npz",)),
        ("npz-empty", ("npz",)),
        ("npz-truncated", ("npz",)),
        ("npz-no-actions", ("actions",)),
        ("npz-misshaped", ("observations", "28")),
        ("npz-nan", ("nan",)),
        ("npz-nan-actions", ("nan",)),
        ("npz-lengths", ("actions",)),
        ("npz-zero-rows", ("rows",)),
        ("npz-1d-obs", ("observations",)),
        ("npz-strings", ("observations",)),
        ("npz-scalar-actions", ("actions",)),
        ("npz-object", ("observations", "objects")),
        ("npz-no-terminal-end", ("terminals",)),
        ("npz-bad-member", ("npz",)),
    ]:
        cli(f"check-{kind}", g, ["data", "check", npz(kind)], *words, codes=(1,))
    for kind, words in [
        ("h5-garbage", ("hdf5",)),
        ("h5-empty", ("hdf5",)),
        ("h5-truncated", ("hdf5",)),
        ("h5-no-actions", ("actions",)),
        ("h5-misshaped", ("observations", "29")),
        ("h5-nan", ("nan",)),
        ("h5-nan-rewards", ("nan",)),
        ("h5-rewards-2d", ("rewards",)),
        ("h5-lengths", ("actions",)),
        ("h5-zero-rows", ("rows",)),
        ("h5-obs-group", ("observations",)),
        ("h5-strings", ("actions",)),
        ("h5-scalar-obs", ("observations",)),
    ]:
        cli(f"check-{kind}", g, ["data", "check", h5(kind)], *words, codes=(1,))
    cli("check-missing-file", g, ["data", "check", _t("nope.npz")], "nope.npz")
    cli("check-unknown-id", g, ["data", "check", "fidec/nope-v0"], "nope")
    cli("check-text-file", g, ["data", "check", _t("ds", "notes.txt")], "notes.txt")
    cli("check-no-extension", g, ["data", "check", _t("ds", "noext")], "noext")
    cli("check-directory", g, ["data", "check", _t("ds")], "directory")
    cli("check-dir-named-npz", g, ["data", "check", _t("ds", "dir.npz")], "dir.npz")
    cli("check-id-no-data", g, ["data", "check", CUBE], "fidec data generate", codes=(1,))
    cli("check-d4rl-val", g, ["data", "check", ANT, "--split", "val"], "validation", codes=(1, 2))
    cli("info-unknown-id", g, ["data", "info", "fidec/nope-v0"], "nope")
    cli("info-garbage-npz", g, ["data", "info", CUBE, "--path", npz("npz-garbage")], "npz")
    cli("info-nan-npz", g, ["data", "info", CUBE, "--path", npz("npz-nan")], "nan")
    cli("info-misshaped-h5", g, ["data", "info", ANT, "--path", h5("h5-misshaped")], "observations")
    cli("info-wrong-suffix", g, ["data", "info", CUBE, "--path", h5("h5-good")], ".npz")
    cli("info-toy-path", g, ["data", "info", TOY, "--path", npz("npz-good")], "toy")
    cli("info-val-missing", g, ["data", "info", CUBE, "--path", npz("npz-good"), "--split", "val"], "-val.npz")
    cli("info-d4rl-val", g, ["data", "info", ANT, "--split", "val"], "validation")
    tb = ["train", "--agent", "bc", "--env"]
    cli("train-garbage-npz", g, [*tb, CUBE, "--dataset", npz("npz-garbage")], "npz")
    cli("train-nan-npz", g, [*tb, CUBE, "--dataset", npz("npz-nan")], "nan")
    cli("train-misshaped-npz", g, [*tb, CUBE, "--dataset", npz("npz-misshaped")], "observations")
    cli("train-truncated-h5", g, [*tb, ANT, "--dataset", h5("h5-truncated")], "hdf5")
    cli("train-nan-h5", g, [*tb, ANT, "--dataset", h5("h5-nan")], "nan")
    cli("train-npz-for-d4rl", g, [*tb, ANT, "--dataset", npz("npz-good")], ".hdf5")

    # ---------------------------------------------------------------- data generate / download
    g = "generate"
    cli("generate-typo", g, ["data", "generate", "cube-singel-play"], "cube-singel")
    cli("generate-empty-name", g, ["data", "generate", ""], "dataset")
    cli("generate-task-id", g, ["data", "generate", CUBE, "--episodes", "-1"], "episodes")
    cli("generate-episodes-zero", g, ["data", "generate", "cube-single-play", "--episodes", "0"], "episodes")
    cli("generate-episodes-negative", g, ["data", "generate", "cube-single-play", "--episodes", "-5"], "episodes")
    cli("generate-episodes-text", g, ["data", "generate", "cube-single-play", "--episodes", "ten"], "episodes")
    cli("generate-workers-zero", g, ["data", "generate", "cube-single-play", "--workers", "0"], "workers")
    cli("generate-workers-negative", g, ["data", "generate", "cube-single-play", "--workers", "-2"], "workers")
    cli("generate-max-steps-zero", g, ["data", "generate", "cube-single-play", "--max-episode-steps", "0"], "steps")
    cli("generate-seed-negative", g, ["data", "generate", "cube-single-play", "--seed", "-1"], "seed")
    cli("generate-out-is-file", g, ["data", "generate", "cube-single-play", "--out", _t("a-file")], "a-file")
    cli(
        "generate-out-readonly", g, ["data", "generate", "cube-single-play", "--out", _t("readonly", "data")],
        "readonly", unprivileged=True,
    )  # fmt: skip
    cli("generate-noise-manipulation", g, ["data", "generate", "cube-single-play", "--noise", "0.1"], "noise")
    cli("generate-visual-locomotion", g, ["data", "generate", "antmaze-large-navigate", "--visual"], "visual")
    cli("generate-noise-negative", g, ["data", "generate", "antmaze-large-navigate", "--noise", "-1"], "noise")
    cli("generate-noise-nan", g, ["data", "generate", "antmaze-large-navigate", "--noise", "nan"], "noise")
    cli(
        "generate-expert-missing", g, ["data", "generate", "antmaze-large-navigate", "--expert", _t("nope.zip")],
        "nope.zip",
    )  # fmt: skip
    cli(
        "generate-expert-garbage", g, ["data", "generate", "antmaze-large-navigate", "--expert", _t("garbage.zip")],
        "garbage.zip",
    )  # fmt: skip
    cli("generate-d4rl-episodes-zero", g, ["data", "generate", "antmaze-umaze", "--episodes", "0"], "episodes")
    cli(
        "generate-navigate-workers-zero", g, ["data", "generate", "antmaze-large-navigate", "--workers", "0"], "workers"
    )
    cli("download-unknown", g, ["data", "download", "cube-singel-play-v0"], "cube-singel")
    cli("download-toy", g, ["data", "download", TOY], "toy")
    cli("download-timeout-negative", g, ["data", "download", CUBE_DATA, "--timeout", "-1"], "timeout")

    # ---------------------------------------------------------------- leaderboard presets
    g = "preset"
    cli("preset-typo", g, ["leaderboard", "run", "--preset", "smok"], "smok", "smoke")
    cli("preset-missing-yaml", g, ["leaderboard", "plan", "--preset", _t("nope.yaml")], "nope.yaml")
    cli("preset-folder", g, ["leaderboard", "plan", "--preset", _t("presets", "folder.yaml")], "folder.yaml")
    cli("preset-binary", g, ["leaderboard", "plan", "--preset", _t("presets", "binary.yaml")], "binary.yaml")
    preset_words = {
        "invalid-yaml": ("yaml",),
        "not-mapping": ("mapping",),
        "scalar": ("mapping",),
        "empty": ("mapping",),
        "unknown-key": ("agnets", "agents"),
        "agents-not-list": ("agents",),
        "unknown-agent": ("bcc",),
        "agent-number": ("agent",),
        "duplicate-agents": ("duplicate",),
        "no-tasks": ("tasks",),
        "task-typo": ("toy-bimodl",),
        "task-number": ("task",),
        "tasks-mapping": ("tasks",),
        "bad-category": ("nope",),
        "bad-suite": ("nope",),
        "seeds-zero": ("seeds",),
        "seeds-dup": ("duplicate",),
        "seeds-text": ("seeds",),
        "seeds-negative": ("seeds",),
        "seeds-float": ("seeds",),
        "steps-negative": ("offline_steps",),
        "steps-text": ("offline_steps",),
        "steps-fraction": ("offline_steps",),
        "steps-nan": ("offline_steps",),
        "steps-list": ("offline_steps",),
        "steps-zero": ("steps",),
        "eval-interval-zero": ("eval_interval",),
        "bool-text": ("use_task_hyperparameters",),
        "divergence-table": ("papr",),
        "overrides-agent": ("bcc",),
        "overrides-key": ("batch_sise",),
        "overrides-zero": ("batch_size",),
        "overrides-nan": ("lr",),
        "overrides-dims": ("actor_hidden_dims",),
        "overrides-list": ("agent_overrides",),
        "overrides-inner-list": ("agent_overrides",),
        "suite-settings-list": ("suite_settings",),
        "suite-unknown": ("toys",),
        "suite-seeds": ("seeds",),
        "suite-null": ("suite_settings",),
        "dataset-unknown": ("cube-singel-play-v0",),
        "dataset-path-number": ("path",),
        "dataset-path-list": ("path",),
        "dataset-entry-text": ("datasets",),
        "dataset-both": ("exactly one",),
        "generate-episodes": ("episodes",),
        "generate-text": ("episodes",),
        "generate-workers": ("workers",),
        "generate-not-mapping": ("generate",),
        "datasets-list": ("datasets",),
        "exclude-text": ("exclude",),
        "exclude-key": ("agnet",),
        "exclude-all": ("exclude",),
        "name-slash": ("name",),
        "visual-online": ("online",),
    }
    assert set(preset_words) == set(PRESETS), set(preset_words) ^ set(PRESETS)
    for name, words in preset_words.items():
        cli(f"preset-{name}", g, ["leaderboard", "plan", "--preset", _t("presets", f"{name}.yaml")], *words)
    cli("preset-run-bad", g, ["leaderboard", "run", "--preset", _t("presets", "seeds-dup.yaml")], "duplicate")

    # ---------------------------------------------------------------- leaderboard run / status / compare / report
    g = "leaderboard"
    lr = ["leaderboard", "run", "--preset", "smoke", "--no-progress"]
    cli("run-workers-zero", g, [*lr, "--out", _t("lb-w0"), "--workers", "0"], "workers")
    cli("run-workers-negative", g, [*lr, "--out", _t("lb-wn"), "--workers", "-1"], "workers")
    cli("run-ray-address", g, [*lr, "--out", _t("lb-ray"), "--backend", "ray", "--ray-address", "nohost:1"], "nohost")
    cli("run-backend-typo", g, [*lr, "--backend", "rey"], "invalid choice")
    cli("run-out-is-file", g, [*lr, "--out", _t("a-file")], "a-file")
    cli("run-out-readonly", g, [*lr, "--out", _t("readonly", "lb")], "readonly", unprivileged=True)
    cli("run-out-garbage-store", g, [*lr, "--out", _t("garbage-results")], "results.sqlite")
    cli("plan-workers-zero", g, ["leaderboard", "plan", "--preset", "smoke", "--workers", "0"], "workers")
    pick = ["leaderboard", "run", "--preset", "cpu-reference", "--dry-run"]
    cli("run-select-agent", g, [*pick, "--agents", "fqll"], "fqll", "fql")
    cli("run-select-task", g, [*pick, "--tasks", "cube-single-play-singletask-task1-v0"], "task1", "task2")
    cli("run-select-seed", g, [*pick, "--seeds", "7"], "[7]", "[0, 1, 2]")
    cli("status-missing", g, ["leaderboard", "status", "--out", _t("nope")], "nope")
    cli("status-empty-dir", g, ["leaderboard", "status", "--out", _t("empty-dir")], "empty-dir")
    cli("status-file", g, ["leaderboard", "status", "--out", _t("a-file")], "a-file")
    cli("status-garbage-store", g, ["leaderboard", "status", "--out", _t("garbage-results")], "results.sqlite")
    cli(
        "status-empty-store", g, ["leaderboard", "status", "--out", _t("empty-results")], "0 done", codes=(0,),
        note="a 0-byte results.sqlite is an empty store: status reports 0 cells",
    )  # fmt: skip
    cli("status-preset-unknown", g, ["leaderboard", "status", "--out", _t(FIX), "--preset", "nope"], "nope")
    cli("compare-missing", g, ["leaderboard", "compare", "--out", _t("nope")], "nope")
    cli("compare-empty-dir", g, ["leaderboard", "compare", "--out", _t("empty-dir")], "empty-dir")
    cli("compare-garbage-store", g, ["leaderboard", "compare", "--out", _t("garbage-results")], "results.sqlite")
    cli("compare-published-typo", g, ["leaderboard", "compare", "--published", "fidec-papr"], "fidec-papr")
    cli("compare-method-typo", g, ["leaderboard", "compare", "--method", "FiDecc"], "FiDecc")
    cli("compare-reps-zero", g, ["leaderboard", "compare", "--out", _t(FIX), "--reps", "0"], "reps")
    cli("compare-reps-negative", g, ["leaderboard", "compare", "--out", _t(FIX), "--reps", "-5"], "reps")
    cli(
        "compare-report-dir-file",
        g,
        ["leaderboard", "compare", "--out", _t(FIX), "--report-dir", _t("a-file")],
        "a-file",
    )
    cli("report-missing", g, ["leaderboard", "report", "--out", _t("nope")], "nope")
    cli("report-empty-dir", g, ["leaderboard", "report", "--out", _t("empty-dir")], "empty-dir")
    cli("report-garbage-store", g, ["leaderboard", "report", "--out", _t("garbage-results")], "results.sqlite")
    cli("report-published-typo", g, ["leaderboard", "report", "--out", _t(FIX), "--published", "nope"], "nope")
    cli("report-reps-negative", g, ["leaderboard", "report", "--out", _t(FIX), "--reps", "-1"], "reps")
    cli("report-dir-is-file", g, ["leaderboard", "report", "--out", _t(FIX), "--report-dir", _t("a-file")], "a-file")
    cli("export-missing", g, ["leaderboard", "export", "--out", _t("nope"), "--to", _t("exported")], "nope")
    cli("export-to-file", g, ["leaderboard", "export", "--out", _t(FIX), "--to", _t("a-file")], "a-file")
    cli("quickstart-workers-zero", g, ["quickstart", "--workers", "0", "--out", _t("qs")], "workers")
    cli("quickstart-out-file", g, ["quickstart", "--out", _t("a-file")], "a-file")

    # ---------------------------------------------------------------- experts
    g = "experts"
    et = ["experts", "train", "ant", "--no-progress"]
    cli("experts-train-env", g, ["experts", "train", "antt"], "invalid choice")
    cli("experts-train-steps-negative", g, [*et, "--steps", "-5", "--out", _t("ex1")], "steps")
    cli("experts-train-steps-zero", g, [*et, "--steps", "0", "--out", _t("ex2")], "steps")
    cli("experts-train-eval-every-zero", g, [*et, "--eval-every", "0", "--out", _t("ex3")], "eval")
    cli("experts-train-eval-episodes-negative", g, [*et, "--eval-episodes", "-1", "--out", _t("ex4")], "episodes")
    cli("experts-train-checkpoint-every-zero", g, [*et, "--checkpoint-every", "0", "--out", _t("ex5")], "checkpoint")
    cli("experts-train-threads-zero", g, [*et, "--threads", "0", "--out", _t("ex6")], "threads")
    cli("experts-train-learning-starts", g, [*et, "--learning-starts", "-1", "--out", _t("ex7")], "learning")
    cli("experts-train-max-steps-zero", g, [*et, "--max-episode-steps", "0", "--out", _t("ex8")], "steps")
    cli(
        "experts-train-resume-nothing", g,
        [*et, "--resume", "--steps", "2", "--learning-starts", "1", "--eval-episodes", "0", "--out", _t("empty-dir")],
        "no checkpoint", "starting a new run", codes=(0,),
        note="--resume without a checkpoint starts a new run and says so, as `fidec train` does",
    )  # fmt: skip
    cli("experts-train-out-file", g, [*et, "--out", _t("a-file")], "a-file")
    cli("experts-export-missing", g, ["experts", "export", _t("nope")], "nope")
    cli("experts-export-empty", g, ["experts", "export", _t("empty-dir")], "checkpoint")
    cli("experts-export-garbage", g, ["experts", "export", _t("expert-run")], "checkpoint")
    cli("experts-list-missing-dir", g, ["experts", "list", "--dir", _t("nope")], "nope")
    cli("experts-list-file", g, ["experts", "list", "--dir", _t("a-file")], "a-file")
    ev = ["experts", "evaluate"]
    cli("experts-evaluate-maze-typo", g, [*ev, "antmaze-larg-navigate"], "antmaze-larg-navigate")
    cli("experts-evaluate-episodes-zero", g, [*ev, "antmaze-large-navigate", "--episodes", "0"], "episodes")
    cli("experts-evaluate-episodes-negative", g, [*ev, "antmaze-large-navigate", "--episodes", "-1"], "episodes")
    cli("experts-evaluate-expert-missing", g, [*ev, "antmaze-large-navigate", "--expert", _t("nope.zip")], "nope.zip")
    cli(
        "experts-evaluate-expert-garbage", g, [*ev, "antmaze-large-navigate", "--expert", _t("garbage.zip")],
        "garbage.zip",
    )  # fmt: skip
    cli("experts-evaluate-noise-negative", g, [*ev, "antmaze-large-navigate", "--noise", "-1"], "noise")
    cli("experts-evaluate-workers-zero", g, [*ev, "antmaze-large-navigate", "--workers", "0"], "workers")

    # ---------------------------------------------------------------- toy-study and bench
    g = "toy-bench"
    ts = ["toy-study", "--no-progress", "--no-report"]
    cli("toy-seeds-zero", g, [*ts, "--seeds", "0", "--out", _t("toy1")], "seeds")
    cli("toy-seeds-negative", g, [*ts, "--seeds", "-1", "--out", _t("toy2")], "seeds")
    cli("toy-steps-zero", g, [*ts, "--steps", "0", "--out", _t("toy3")], "steps")
    cli("toy-steps-text", g, [*ts, "--steps", "many"], "steps")
    cli("toy-landscape-unknown", g, [*ts, "--landscapes", "T9", "--out", _t("toy4")], "T9")
    cli("toy-agent-unknown", g, [*ts, "--agents", "fqll", "--out", _t("toy5")], "fqll")
    cli("toy-workers-zero", g, [*ts, "--workers", "0", "--out", _t("toy6")], "workers")
    cli("toy-divergence-negative", g, [*ts, "--target-divergence", "-1", "--out", _t("toy7")], "divergence")
    cli("toy-divergence-nan", g, [*ts, "--target-divergence", "nan", "--out", _t("toy8")], "divergence")
    cli("toy-critic", g, [*ts, "--critic", "oracel"], "invalid choice")
    cli("toy-outputs-only-empty", g, [*ts, "--outputs-only", "--out", _t("empty-dir")], "toy-study")
    cli("toy-outputs-only-missing", g, [*ts, "--outputs-only", "--out", _t("nope")], "nope")
    cli("toy-outputs-only-garbage", g, [*ts, "--outputs-only", "--out", _t("garbage-results")], "results.sqlite")
    cli("toy-out-file", g, [*ts, "--quick", "--out", _t("a-file")], "a-file")
    cli("bench-no-target", g, ["bench"], "required")
    ba = ["bench", "agents", "--out", _t("bench")]
    cli("bench-agents-size", g, [*ba, "--sizes", "huge"], "huge")
    cli("bench-agents-agent", g, [*ba, "--agents", "fqll"], "fqll")
    cli("bench-agents-steps-zero", g, [*ba, "--steps", "0"], "steps")
    cli("bench-agents-rounds-zero", g, [*ba, "--rounds", "0"], "rounds")
    cli("bench-agents-fused-zero", g, [*ba, "--fused", "0"], "fused")
    cli("bench-agents-seeds-zero", g, [*ba, "--seeds", "0"], "seeds")
    bd = ["bench", "data", "--out", _t("bench")]
    cli("bench-data-dataset", g, [*bd, "--dataset", "cube-singel-play"], "cube-singel")
    cli("bench-data-episodes-zero", g, [*bd, "--episodes", "0"], "episodes")
    cli("bench-data-workers-zero", g, [*bd, "--workers", "0"], "workers")
    be = ["bench", "eval", "--out", _t("bench")]
    cli("bench-eval-env", g, [*be, "--env", "fidec/nope-v0"], "nope")
    cli("bench-eval-episodes-zero", g, [*be, "--episodes", "0"], "episodes")
    cli("bench-eval-workers-zero", g, [*be, "--workers", "0"], "workers")
    cli("bench-eval-repeats-zero", g, [*be, "--repeats", "0"], "repeats")
    bs = ["bench", "seeds", "--out", _t("bench")]
    cli("bench-seeds-seeds-zero", g, [*bs, "--seeds", "0"], "seeds")
    cli("bench-seeds-seeds-text", g, [*bs, "--seeds", "a,b"], "seeds")
    cli("bench-seeds-agent", g, [*bs, "--agents", "fqll"], "fqll")
    cli("bench-seeds-updates-zero", g, [*bs, "--updates-per-call", "0"], "updates")
    cli("bench-seeds-calls-zero", g, [*bs, "--calls", "0"], "calls")
    cli("bench-seeds-rounds-zero", g, [*bs, "--rounds", "0"], "rounds")

    # ---------------------------------------------------------------- the Python API
    g = "api"
    imp = "import fidec_gym; "
    gym = "import gymnasium as gym, fidec_gym; "
    batch = (
        "import numpy as np; from fidec_gym.agents import make_agent; "
        "batch = {'observations': np.zeros((1, 2), np.float32), 'actions': np.zeros((1, 2), np.float32)}; "
    )
    load = "from fidec_gym.agents import load_agent; "
    agent_file = f"str(T / '{RUN}/checkpoints/step_0000000002/agent.msgpack')"
    evaluate = load + "from fidec_gym.eval.run.evaluate import evaluate; "
    train = (
        "from fidec_gym.eval.run.config import TrainConfig; from fidec_gym.eval.run.trainer import train; "
        f"base = dict(agent='bc', env_id='{TOY}', results_dir=str(T / 'api-res')); "
    )
    seeds = (
        "from fidec_gym.eval.run.config import TrainConfig; from fidec_gym.eval.run.multiseed import train_seeds; "
        f"c = TrainConfig(agent='bc', env_id='{TOY}', offline_steps=2, results_dir=str(T / 'api-seeds')); "
    )
    presets = "from fidec_gym.eval.grid.presets import load_preset; "
    table = [
        ("task-info-typo", imp + "fidec_gym.task_info('fidec/toy-bimodl-v0')", "toy-bimodl"),
        ("task-info-number", imp + "fidec_gym.task_info(42)", "42"),
        ("list-tasks-suite", imp + "fidec_gym.list_tasks(suite='ogbenchh')", "ogbenchh"),
        ("hyperparameters-agent", imp + f"fidec_gym.task_hyperparameters('{TOY}', 'fqll')", "fqll"),
        ("load-unknown", imp + "fidec_gym.load_dataset('fidec/nope-v0')", "nope"),
        ("load-split", imp + f"fidec_gym.load_dataset('{TOY}', split='test')", "test"),
        ("load-compact-toy", imp + f"fidec_gym.load_dataset('{TOY}', compact=True)", "compact"),
        ("load-d4rl-val", imp + f"fidec_gym.load_dataset('{ANT}', split='val')", "validation"),
        ("load-no-data", imp + f"fidec_gym.load_dataset('{CUBE}')", "fidec data generate"),
        ("load-path-missing", imp + f"fidec_gym.load_dataset('{CUBE}', path=T / 'nope.npz')", "nope.npz"),
        ("check-missing", "from fidec_gym.envs.check import check_dataset; check_dataset('/nope.npz')", "nope"),
        ("gym-make-typo", gym + "gym.make('fidec/toy-bimodl-v0')", "toy-bimodl"),
        ("gym-make-timing", gym + f"gym.make('{CUBE}', success_timing='later')", "success_timing"),
        ("gym-make-frame", gym + f"gym.make('{ANT}', frame='mujoco')", "frame"),
        ("gym-make-kwarg", gym + f"gym.make('{TOY}', colour='red')", "colour"),
        ("make-agent-typo", batch + "make_agent('fqll', 0, batch)", "fqll"),
        ("make-agent-key", batch + "make_agent('bc', 0, batch, {'batch_sise': 8})", "batch_sise"),
        ("make-agent-batch-zero", batch + "make_agent('bc', 0, batch, {'batch_size': 0})", "batch_size"),
        ("make-agent-lr-nan", batch + "make_agent('bc', 0, batch, {'lr': float('nan')})", "lr"),
        ("make-agent-dims", batch + "make_agent('bc', 0, batch, {'actor_hidden_dims': 64})", "actor_hidden_dims"),
        ("make-agent-overrides-list", batch + "make_agent('bc', 0, batch, [('lr', 1)])", "override"),
        ("make-agent-batch-list", batch + "make_agent('bc', 0, [1, 2, 3])", "batch"),
        ("make-agent-batch-empty", batch + "make_agent('bc', 0, {})", "observations"),
        ("make-agent-no-actions", batch + "make_agent('bc', 0, {'observations': batch['observations']})", "actions"),
        (
            "make-agent-1d-actions",
            batch + "make_agent('bc', 0, dict(batch, actions=np.zeros(1, np.float32)))",
            "actions",
        ),
        ("make-agent-seed-text", batch + "make_agent('bc', 'abc', batch)", "seed"),
        ("load-agent-garbage", load + "load_agent(str(T / 'garbage.msgpack'))", "garbage"),
        ("load-agent-missing", load + "load_agent(str(T / 'nope.msgpack'))", "nope"),
        (
            "train-steps-negative",
            train + "train(TrainConfig(**base, offline_steps=-1), progress=False)",
            "offline_steps",
        ),
        (
            "train-steps-text",
            train + "train(TrainConfig(**base, offline_steps='100'), progress=False)",
            "offline_steps",
        ),
        ("train-steps-float", train + "train(TrainConfig(**base, offline_steps=1.5), progress=False)", "offline_steps"),
        (
            "train-steps-nan",
            train + "train(TrainConfig(**base, offline_steps=float('nan')), progress=False)",
            "offline_steps",
        ),
        ("train-agent", train + "train(TrainConfig(**dict(base, agent='fqll')), progress=False)", "fqll"),
        ("train-env", train + "train(TrainConfig(**dict(base, env_id='nope')), progress=False)", "nope"),
        (
            "train-overrides",
            train + "train(TrainConfig(**base, agent_overrides={'batch_size': 0}), progress=False)",
            "batch_size",
        ),
        (
            "train-overrides-list",
            train + "train(TrainConfig(**base, agent_overrides=[1]), progress=False)",
            "agent_overrides",
        ),
        ("train-seed-bool", train + "train(TrainConfig(**base, seed=True), progress=False)", "seed"),
        (
            "train-dataset-missing",
            train + f"train(TrainConfig(**dict(base, env_id='{CUBE}'), dataset_path='/nope.npz'), progress=False)",
            "nope",
        ),
        ("seeds-empty", seeds + "train_seeds(c, [], progress=False)", "seed"),
        ("seeds-duplicate", seeds + "train_seeds(c, [0, 0], progress=False)", "seed"),
        ("seeds-negative", seeds + "train_seeds(c, [-1, 1], progress=False)", "seed"),
        ("seeds-text", seeds + "train_seeds(c, ['a'], progress=False)", "seed"),
        (
            "seeds-updates-zero",
            seeds + "train_seeds(c, [0, 1], progress=False, updates_per_call=0)",
            "updates per call",
        ),
        ("seeds-sampling", seeds + "train_seeds(c, [0, 1], progress=False, sampling='gpu')", "gpu"),
        ("parse-seeds", "from fidec_gym.eval.run.vmapped import parse_seeds; parse_seeds('0,x')", "seeds"),
        ("preset-typo", presets + "load_preset('smok')", "smok"),
        ("preset-path-number", presets + "load_preset(T / 'presets/dataset-path-number.yaml')", "path"),
        (
            "status-missing",
            "from fidec_gym.eval.grid.status import leaderboard_status; leaderboard_status(T / 'nope')",
            "nope",
        ),
        (
            "sampler-batch-zero",
            imp + f"from fidec_gym.envs.datasets import BatchSampler; BatchSampler(fidec_gym.load_dataset('{TOY}'), 0)",
            "batch_size",
        ),
        ("evaluate-episodes-zero", evaluate + f"evaluate(load_agent({agent_file}), '{TOY}', 0, 0)", "episodes"),
        ("evaluate-env-typo", evaluate + f"evaluate(load_agent({agent_file}), 'fidec/nope-v0', 2, 0)", "nope"),
    ]
    for name, code, word in table:
        api(f"api-{name}", g, code, word)
    api(
        "api-make-agent-seed-negative", g, batch + "make_agent('bc', -1, batch)", "accepted", codes=(0,),
        note="a negative int is a valid JAX seed for one agent; runs (TrainConfig, --seed, --seeds) require >= 0",
    )  # fmt: skip
    for kind, word in [
        ("npz-garbage", "npz"),
        ("npz-empty", "npz"),
        ("npz-truncated", "npz"),
        ("npz-no-actions", "actions"),
        ("npz-misshaped", "observations"),
        ("npz-nan", "nan"),
        ("npz-lengths", "actions"),
        ("npz-zero-rows", "rows"),
        ("npz-1d-obs", "observations"),
        ("npz-strings", "observations"),
        ("npz-scalar-actions", "actions"),
        ("npz-object", "observations"),
        ("npz-bad-member", "npz"),
    ]:
        api(
            f"api-load-{kind}", g, imp + f"fidec_gym.load_dataset('{CUBE}', path=T / 'ds/{kind}/{CUBE_DATA}.npz')", word
        )
    for kind, word in [
        ("h5-garbage", "hdf5"),
        ("h5-truncated", "hdf5"),
        ("h5-no-actions", "actions"),
        ("h5-misshaped", "observations"),
        ("h5-nan", "nan"),
        ("h5-rewards-2d", "rewards"),
        ("h5-lengths", "actions"),
        ("h5-zero-rows", "rows"),
        ("h5-obs-group", "observations"),
        ("h5-strings", "actions"),
        ("h5-scalar-obs", "observations"),
    ]:
        api(f"api-load-{kind}", g, imp + f"fidec_gym.load_dataset('{ANT}', path=T / 'ds/{kind}/{ANT_DATA}.hdf5')", word)
    return out


# ==================================================================================================== running
API_PRELUDE = """\
import os, sys, pathlib
T = pathlib.Path(os.environ["BAD_INPUTS_ROOT"])
from fidec_gym.errors import FidecError
try:
    import gymnasium.error
    _LIBRARY_ERRORS = (gymnasium.error.Error,)
except ImportError:
    _LIBRARY_ERRORS = ()
try:
{body}
except FidecError as error:
    print(f"{{type(error).__name__}}: {{error}}", file=sys.stderr)
    sys.exit(error.exit_code)
except _LIBRARY_ERRORS as error:
    print(f"{{type(error).__module__}}.{{type(error).__name__}}: {{error}}", file=sys.stderr)
    sys.exit(2)
print("no error: the bad input was accepted", file=sys.stderr)
"""

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_CAPS_TO_DROP = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER: root then obeys file modes
_PR_CAPBSET_DROP = 24


def _drop_file_capabilities() -> None:
    """In the child before exec: remove the capabilities that let root ignore file permissions. A process running
    as root gets its capabilities from the bounding set at exec, so the new program runs without them."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in _CAPS_TO_DROP:
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _permissions_apply(t: Path, env: dict) -> tuple[bool, str]:
    """Whether the unprivileged cases can run here (a read-only directory really refuses writes)."""
    probe = t / "readonly" / "probe"
    kwargs = {"preexec_fn": _drop_file_capabilities} if os.geteuid() == 0 else {}
    try:
        result = subprocess.run(
            [sys.executable, "-c", f"open({str(probe)!r}, 'w')"], env=env, capture_output=True, timeout=30, **kwargs
        )
    except (OSError, subprocess.SubprocessError) as error:
        return False, f"cannot drop root's file capabilities ({error})"
    if result.returncode == 0:
        probe.unlink(missing_ok=True)
        return False, "a chmod 555 directory accepted a write here (root with CAP_DAC_OVERRIDE)"
    return True, ""


def _clean(text: str) -> list[str]:
    lines = []
    for raw in _ANSI.sub("", text).splitlines():
        line = raw.rsplit("\r", 1)[-1].strip()  # progress bars rewrite their line with \r
        if line:
            lines.append(line)
    return lines


def user_message(stdout: str, stderr: str, traceback: bool) -> str:
    """What the user is told: the error line of stderr (and what follows it), else the end of the output."""
    lines = _clean(stderr) or _clean(stdout)
    if not lines:
        return ""
    if traceback:
        return lines[-1]
    start = max(
        (i for i, line in enumerate(lines) if re.search(r"error|Error\b|problem", line)), default=len(lines) - 1
    )
    return " / ".join(lines[start : start + 4])


def _run(command: list[str], cwd: Path, env: dict, kwargs: dict) -> tuple[Optional[int], str, str]:
    """Run ``command`` in a session of its own; on timeout the whole process group (its workers too) is killed.
    Returns (exit code or None on timeout, stdout, stderr)."""
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True, **kwargs,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
        rc: Optional[int] = process.returncode
    except subprocess.TimeoutExpired:
        rc = None
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # leftover workers of this case only
        except (ProcessLookupError, PermissionError):
            pass
    if rc is None:
        stdout, stderr = process.communicate()
    return rc, stdout, stderr


def run_case(case: Case, t: Path, env: dict, permissions: tuple[bool, str]) -> Outcome:
    if case.unprivileged and not permissions[0]:
        return Outcome(case, None, f"skipped: {permissions[1]}", False, "SKIP", 0.0)
    restore_shared(t)
    if case.setup is not None:
        case.setup(t)
    if case.argv is not None:
        command = [sys.executable, "-m", "fidec_gym.cli", *[arg.replace("$T", str(t)) for arg in case.argv]]
    else:
        body = textwrap.indent(case.code or "", "    ")
        command = [sys.executable, "-c", API_PRELUDE.format(body=body)]
    kwargs = {"preexec_fn": _drop_file_capabilities} if case.unprivileged and os.geteuid() == 0 else {}
    start = time.monotonic()
    rc, stdout, stderr = _run(command, t / "work", env, kwargs)
    seconds = time.monotonic() - start
    traceback = TRACEBACK in stdout or TRACEBACK in stderr
    message = user_message(stdout, stderr, traceback)
    reasons = []
    if rc is None:
        reasons.append(f"no answer within {TIMEOUT:.0f} s (the input was accepted and work started)")
    elif rc == 0 and 0 not in case.codes:
        reasons.append("exit 0: the bad input was accepted")
    elif rc not in case.codes:
        reasons.append(f"exit {rc}, expected {'/'.join(map(str, case.codes))}")
    if traceback:
        reasons.append("traceback")
    if not message:
        reasons.append("no message")
    everything = (stdout + stderr).lower()
    missing = [word for word in case.expect if word.lower() not in everything]
    if missing and rc:
        reasons.append(f"message does not name {', '.join(map(repr, missing))}")
    if len(_clean(stderr)) > 25 and not traceback:
        reasons.append(f"long output ({len(_clean(stderr))} lines on stderr)")
    verdict = "PASS" if not reasons else "FAIL"
    return Outcome(case, rc, message.replace(str(t), "$T"), traceback, verdict, seconds, reasons)


def _input_text(case: Case) -> str:
    if case.argv is not None:
        import shlex

        return "fidec " + " ".join(shlex.quote(arg) if arg != "" else "''" for arg in case.argv)
    return "python: " + " ".join(line.strip() for line in (case.code or "").splitlines())


def _cell(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("|", "\\|").replace("`", "'")


def write_report(outcomes: list[Outcome], path: Path, command: str, note: str) -> None:
    total = len(outcomes)
    passed = sum(o.verdict == "PASS" for o in outcomes)
    skipped = sum(o.verdict == "SKIP" for o in outcomes)
    tracebacks = sum(o.traceback for o in outcomes)
    lines = [
        "# Bad-input audit",
        "",
        "What fidec-gym says when it is given wrong input: each row is one bad input run through the real `fidec` "
        "command line (`python -m fidec_gym.cli ...`) or the Python API (a snippet in a fresh interpreter), in a "
        "temporary directory (`$T`) with `HOME`, `FIDEC_DATA_DIR` and the caches pointed into it. A case passes when "
        "it exits with the expected code (2: bad input; 1 where the command reports a problem as its result, such as "
        "`fidec data check`), prints a short message naming the problem, and shows no Python traceback. API snippets "
        "catch `FidecError` (and Gymnasium's own errors for `gym.make`) and print `Class: message`; any other "
        "exception keeps its traceback.",
        "",
        f"Rebuild: `{command}` (generated by `scripts/bad_inputs.py`; the bad files are made by the script).",
        "",
        f"**Summary: {total} cases, {passed} passed, {total - passed - skipped} failed, {skipped} skipped, "
        f"{tracebacks} with a traceback.**",
    ]
    if note:
        lines += ["", note]
    lines += ["", "| # | case | input | exit | message | traceback | result |", "|---|---|---|---|---|---|---|"]
    for number, outcome in enumerate(outcomes, 1):
        result = outcome.verdict + (f": {'; '.join(outcome.reasons)}" if outcome.reasons else "")
        if outcome.case.note:
            result += f" (expected: {outcome.case.note})"
        code = "-" if outcome.verdict == "SKIP" else "timeout" if outcome.rc is None else str(outcome.rc)
        lines.append(
            f"| {number} | {outcome.case.id} | `{_cell(_input_text(outcome.case), 220)}` | {code} | "
            f"{_cell(outcome.message)} | {'yes' if outcome.traceback else 'no'} | {_cell(result, 200)} |"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text("\n".join(lines) + "\n")
    os.replace(temporary, path)


def child_env(t: Path) -> dict:
    keep = ("PATH", "LANG", "LC_ALL", "TERM", "PYTHONPATH", "VIRTUAL_ENV", "CONDA_PREFIX")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env.update(
        HOME=str(t / "home"),
        FIDEC_DATA_DIR=str(t / "data"),
        FIDEC_EXPERTS_DIR=str(t / "experts"),
        MINARI_DATASETS_PATH=str(t / "minari"),
        XDG_CACHE_HOME=str(t / "cache"),
        MPLCONFIGDIR=str(t / "cache" / "matplotlib"),
        TMPDIR=str(t / "tmp"),
        WANDB_MODE="disabled",
        JAX_PLATFORMS="cpu",
        MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"),
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        BAD_INPUTS_ROOT=str(t),
        COLUMNS="120",
    )
    return env


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python scripts/bad_inputs.py")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown file to write (default: %(default)s)")
    parser.add_argument("--only", action="append", help="run only the cases whose id contains this (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the case ids and stop")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (its path is printed)")
    args = parser.parse_args(argv)

    selected = cases()
    ids = [case.id for case in selected]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise SystemExit(f"duplicate case ids: {duplicates}")
    if args.only:
        selected = [case for case in selected if any(word in case.id for word in args.only)]
    if args.list:
        print("\n".join(case.id for case in selected))
        return 0

    t = Path(tempfile.mkdtemp(prefix="fidec-bad-inputs-"))
    try:
        for name in ("home", "data", "experts", "minari", "cache", "tmp", "work"):
            (t / name).mkdir()
        env = child_env(t)
        print(f"bad-input audit in {t}: making the bad files and a 2-step fixture run ...", file=sys.stderr)
        make_datasets(t)
        make_presets(t)
        make_files(t)
        fixture_problem = make_fixture_run(t, env)
        if fixture_problem:
            print(f"warning: {fixture_problem}", file=sys.stderr)
        permissions = _permissions_apply(t, env)
        outcomes = []
        for number, case in enumerate(selected, 1):
            outcome = run_case(case, t, env, permissions)
            outcomes.append(outcome)
            extra = f": {'; '.join(outcome.reasons)}" if outcome.reasons else ""
            print(
                f"[{number}/{len(selected)}] {case.id}: {outcome.verdict} (exit {outcome.rc}, {outcome.seconds:.1f} s)"
                f"{extra}",
                file=sys.stderr,
            )
        notes = []
        if fixture_problem:
            notes.append(f"Note: {fixture_problem}")
        if not permissions[0]:
            notes.append(f"Note: the read-only-directory cases were skipped: {permissions[1]}.")
        elif os.geteuid() == 0:
            notes.append(
                "Note: the read-only-directory cases ran as root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH/"
                "CAP_FOWNER (dropped from the bounding set before exec), so `chmod 555` applies as for any user."
            )
        command = (
            "python scripts/bad_inputs.py"
            + ("" if args.out.resolve() == DEFAULT_OUT else f" --out {args.out}")
            + "".join(f" --only {word}" for word in args.only or [])
        )
        write_report(outcomes, args.out, command, " ".join(notes))
        total = len(outcomes)
        passed = sum(o.verdict == "PASS" for o in outcomes)
        tracebacks = sum(o.traceback for o in outcomes)
        print(f"{total} cases, {passed} passed, {tracebacks} tracebacks -> {args.out}", file=sys.stderr)
        return 0 if passed + sum(o.verdict == "SKIP" for o in outcomes) == total else 1
    finally:
        (t / "readonly").chmod(0o755)
        if args.keep:
            print(f"kept {t}", file=sys.stderr)
        else:
            shutil.rmtree(t, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
