"""Ctrl-C, SIGTERM and kill -9 stop the leaderboard, the toy study, data generation, training and evaluation
workers within seconds: exit 128 + signal, no process left behind, runs marked resumable (never left "running"),
and no traceback on the way out.

Every test starts the real command in its own session (``start_new_session``), so "a Ctrl-C at the terminal" is a
SIGINT to that process group and "no process left" means no live process in that session.
"""

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

TOY = "fidec/toy-bimodal-v0"
SADDLE = "fidec/toy-saddle-v0"
TINY = {"batch_size": 16, "actor_hidden_dims": [16, 16], "value_hidden_dims": [16, 16]}
STOP_SECONDS = 15  # the brief: a stopped grid exits "within seconds"


def _env(**extra) -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "MUJOCO_GL": "egl", "PYTHONUNBUFFERED": "1", **extra}


def _long_preset(path: Path, eval_workers: int = 1) -> Path:
    # Long enough never to finish during a test; a checkpoint every 10 steps so that there is one to resume.
    preset = {
        "name": path.stem,
        "agents": ["bc"],
        "tasks": [TOY, SADDLE],
        "seeds": [0],
        "offline_steps": 1_000_000,
        "eval_interval": 500,
        "eval_episodes": 4,
        "eval_workers": eval_workers,  # where evaluation runs in sub-processes, they must stop too
        "log_interval": 100,
        "checkpoint_interval": 10,
        "agent_overrides": {"all": TINY},
    }
    path.write_text(yaml.safe_dump(preset))
    return path


def _default_sigint() -> None:
    # As a terminal's foreground job: when pytest itself runs as a background job of a script, its children inherit
    # an ignored SIGINT, which Python (and fidec) rightly keep ignoring.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args: list[str], **env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fidec_gym.cli", *args],
        env=_env(**env),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_default_sigint,
    )


def _session(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def _wait_session_empty(sid: int, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = _session(sid)
        if not left:
            return []
        time.sleep(0.2)
    return _session(sid)


def _runs(out: Path) -> list[tuple]:
    with sqlite3.connect(f"file:{out / 'results.sqlite'}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT status, message, last_good_step FROM runs ORDER BY id").fetchall()


def _wait_running(process: subprocess.Popen, out: Path, count: int, min_step: int = 10, timeout: float = 180):
    """Until ``count`` runs are running with a checkpoint at ``min_step`` or later."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        if (out / "results.sqlite").exists():
            try:
                runs = _runs(out)
            except sqlite3.OperationalError:
                runs = []
            if sum(status == "running" and (step or 0) >= min_step for status, _, step in runs) >= count:
                return
        time.sleep(0.3)
    process.kill()
    pytest.fail(f"runs never started: {process.stdout.read()[-3000:]}")


def _stop(process: subprocess.Popen) -> tuple[int, float, str]:
    start = time.monotonic()
    try:
        code = process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail("the command did not stop within 60 s")
    return code, time.monotonic() - start, process.stdout.read()


def _assert_clean_output(output: str) -> None:
    assert "Traceback" not in output and "BrokenPipe" not in output, output[-4000:]


# ------------------------------------------------------------------------------------------------ leaderboard
def test_ctrl_c_stops_the_grid(tmp_path):
    out = tmp_path / "out"
    process = _start(
        [
            "leaderboard",
            "run",
            "--preset",
            str(_long_preset(tmp_path / "long.yaml", eval_workers=2)),
            "--out",
            str(out),
            "--workers",
            "2",
            "--no-progress",
        ]
    )
    _wait_running(process, out, count=2)
    assert len(_session(process.pid)) >= 3  # the CLI and two cell workers (and whatever they started)

    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C at the terminal: the whole foreground group
    code, seconds, output = _stop(process)

    assert code == 130 and seconds < STOP_SECONDS, (code, seconds, output[-3000:])
    assert "interrupted; unfinished runs are resumable: run the same command again to continue" in output
    _assert_clean_output(output)
    assert _wait_session_empty(process.pid, 5) == []
    runs = _runs(out)
    assert [status for status, _, _ in runs] == ["pending", "pending"], runs
    # Marked by the worker's own clean-up, or by the parent when a worker had to be killed after the grace period.
    assert all(re.search(r"run the same .*again", message) for _, message, _ in runs), runs
    for run_dir in (out / "runs").iterdir():  # the last good checkpoint is kept for the resume
        assert list((run_dir / "checkpoints").glob("step_*")), run_dir


def test_sigterm_then_a_second_signal_stops_at_once(tmp_path):
    out = tmp_path / "out"
    process = _start(
        [
            "leaderboard",
            "run",
            "--preset",
            str(_long_preset(tmp_path / "long.yaml")),
            "--out",
            str(out),
            "--workers",
            "2",
            "--no-progress",
        ]
    )
    _wait_running(process, out, count=2)

    os.kill(process.pid, signal.SIGTERM)  # e.g. a batch scheduler: only the parent gets it
    time.sleep(0.3)
    os.kill(process.pid, signal.SIGTERM)  # the impatient second one: no grace period
    code, seconds, output = _stop(process)

    assert code == 143 and seconds < 5, (code, seconds, output[-3000:])
    _assert_clean_output(output)
    assert _wait_session_empty(process.pid, 5) == []
    assert {status for status, _, _ in _runs(out)} == {"pending"}


def test_workers_exit_when_the_parent_is_killed(tmp_path):
    out = tmp_path / "out"
    process = _start(
        [
            "leaderboard",
            "run",
            "--preset",
            str(_long_preset(tmp_path / "long.yaml")),
            "--out",
            str(out),
            "--workers",
            "2",
            "--no-progress",
        ]
    )
    _wait_running(process, out, count=2)

    os.kill(process.pid, signal.SIGKILL)  # no chance to clean up: the orphaned workers must notice
    process.wait()
    assert _wait_session_empty(process.pid, STOP_SECONDS) == []
    runs = _runs(out)
    assert "running" not in {status for status, _, _ in runs}, runs
    _assert_clean_output(process.stdout.read())


# ------------------------------------------------------------------------------------ training, evaluation
def test_ctrl_c_during_training_with_evaluation_workers(tmp_path):
    out = tmp_path / "out"
    # Evaluations of 400 episodes every 10 steps: most of the time goes to evaluation, so the Ctrl-C lands in the
    # middle of an exchange with the evaluation workers (which once made closing them wait forever).
    args = [
        "train",
        "--agent",
        "bc",
        "--env",
        TOY,
        "--steps",
        "1000000",
        "--eval-interval",
        "10",
        "--eval-episodes",
        "400",
        "--eval-workers",
        "2",
        "--checkpoint-interval",
        "10",
        "--log-interval",
        "100",
        "--set",
        "batch_size=16",
        "--set",
        "actor_hidden_dims=[16,16]",
        "--out",
        str(out),
        "--no-progress",
    ]
    process = _start(args)
    _wait_running(process, out, count=1, min_step=20)

    os.killpg(process.pid, signal.SIGINT)
    code, seconds, output = _stop(process)

    assert code == 130 and seconds < STOP_SECONDS, (code, seconds, output[-3000:])
    assert "fidec train: interrupted; the run is resumable: run the same command with --resume" in output
    _assert_clean_output(output)
    assert _wait_session_empty(process.pid, 5) == []
    assert [status for status, _, _ in _runs(out)] == ["pending"]


EVALUATOR_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import fidec_gym
    from fidec_gym.eval.run.evaluate import Evaluator

    evaluator = Evaluator("fidec/toy-bimodal-v0", 2, vectorization="async")
    print("ready", flush=True)
    while True:
        evaluator.run(lambda observations: np.zeros((len(observations), 2)), 2, seed=0)  # 2-d toy actions
    """
)


def test_evaluation_workers_exit_with_their_parent(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-c", EVALUATOR_SCRIPT],
        env=_env(),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout.readline().strip() == "ready"
    assert len(_session(process.pid)) >= 3  # the script and its two environment workers
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert _wait_session_empty(process.pid, 10) == []
    _assert_clean_output(process.stdout.read())  # no BrokenPipe tracebacks from the orphaned workers


# ------------------------------------------------------------------------------------------------ toy study, data
def test_ctrl_c_stops_the_toy_study(tmp_path):
    out = tmp_path / "study"
    process = _start(
        [
            "toy-study",
            "--quick",
            "--out",
            str(out),
            "--workers",
            "2",
            "--landscapes",
            "T1",
            "T2",
            "--agents",
            "bc",
            "fql",
            "--critic",
            "learned",
            "--steps",
            "1000000",
            "--no-progress",
            "--no-report",
            "--compile-cache",
            "none",
        ]
    )
    _wait_running(process, out, count=1, min_step=0)

    os.killpg(process.pid, signal.SIGINT)
    code, seconds, output = _stop(process)

    assert code == 130 and seconds < STOP_SECONDS, (code, seconds, output[-3000:])
    _assert_clean_output(output)
    assert _wait_session_empty(process.pid, 5) == []
    assert "running" not in {status for status, _, _ in _runs(out)}


@pytest.mark.parametrize("how", ["sigterm", "kill"])
def test_data_generation_stops_and_leaves_nothing(tmp_path, how):
    pytest.importorskip("ogbench")
    out = tmp_path / "data"
    process = _start(
        [
            "data",
            "generate",
            "cube-single-play",
            "--episodes",
            "200",
            "--workers",
            "2",
            "--max-episode-steps",
            "200",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    deadline = time.monotonic() + 60
    while len(_session(process.pid)) < 3 and time.monotonic() < deadline:  # the CLI and its two pool workers
        time.sleep(0.2)
    time.sleep(3)  # the workers are generating episodes now

    os.kill(process.pid, signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    code, seconds, output = _stop(process)

    assert _wait_session_empty(process.pid, 10) == []
    if how == "sigterm":
        assert code == 143 and seconds < STOP_SECONDS, (code, seconds, output[-3000:])
        assert "interrupted; nothing was written; run the same command again to start over" in output
        _assert_clean_output(output)
    assert not out.exists() or [p.name for p in out.iterdir()] == []  # no dataset, no temporaries


@pytest.mark.parametrize("where", ["gc callback", "__del__"])
def test_a_signal_where_python_drops_exceptions_is_not_lost(where, capsys):
    # Python runs signal handlers wherever Python code runs, garbage-collector callbacks (JAX registers one),
    # weakref callbacks and __del__ included, and an exception raised there is printed and dropped: the interrupt
    # must come again once that code has returned.
    import gc

    from fidec_gym.processes import Interrupted, stop_on_signals

    fired = []

    def signal_and_let_the_handler_run(*_):
        if not fired:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000):  # the handler runs in here
                pass

    class SignalsWhenCollected:
        __del__ = signal_and_let_the_handler_run

    with stop_on_signals(), pytest.raises(Interrupted) as caught:
        if where == "gc callback":
            gc.callbacks.append(signal_and_let_the_handler_run)  # only now: a collection may start at any allocation
        try:
            if where == "__del__":
                SignalsWhenCollected()
            else:
                gc.collect()
            time.sleep(2)
        finally:
            if where == "gc callback":
                gc.callbacks.remove(signal_and_let_the_handler_run)
    assert fired and caught.value.exit_code == 143
    assert "Exception ignored" not in capsys.readouterr().err


@pytest.mark.parametrize("seeds", ["together", "alone"])
def test_an_error_while_stopping_leaves_the_run_resumable(tmp_path, monkeypatch, seeds):
    # A SIGTERM can cut a clean-up short, and the code after it can then fail in turn (a grid worker once reported
    # "OSError: [Errno 9] Bad file descriptor" after a Ctrl-C): that is the interrupt, not a failed run.
    from fidec_gym.eval.run import multiseed
    from fidec_gym.eval.run.config import TrainConfig
    from fidec_gym.eval.run.loggers import CsvLogger
    from fidec_gym.eval.run.trainer import train
    from fidec_gym.eval.store import ResultsStore
    from fidec_gym.processes import Interrupted, interrupt_of, stop_on_signals

    def stopped_then_failing(self, step, metrics):
        fd = os.open(os.devnull, os.O_RDONLY)
        os.close(fd)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises Interrupted in here
        finally:
            os.close(fd)  # closed already: EBADF

    monkeypatch.setattr(CsvLogger, "log", stopped_then_failing)
    cfg = TrainConfig(
        agent="bc",
        env_id=SADDLE,
        offline_steps=20,
        eval_interval=10,
        eval_episodes=2,
        log_interval=10,
        checkpoint_interval=10,
        agent_overrides={"actor_hidden_dims": [16, 16], "batch_size": 16},
        results_dir=str(tmp_path),
    )
    with stop_on_signals(), pytest.raises(Interrupted) as caught:
        if seeds == "together":
            multiseed.train_seeds(cfg, [0, 1], progress=False)
        else:
            train(cfg, progress=False)
    assert caught.value.exit_code == 143
    assert isinstance(caught.value.__cause__, OSError) and caught.value.__cause__.errno == 9
    runs = ResultsStore(tmp_path).runs()
    assert len(runs) == (2 if seeds == "together" else 1)
    assert all(run["status"] == "pending" and "interrupted" in run["message"] for run in runs), runs
    assert interrupt_of(OSError(9, "Bad file descriptor")) is None  # once the stop was handled, an error is its own


def test_a_worker_takes_the_next_item_of_its_own_group_first():
    """Affinity: a worker keeps to the group it ran last (the programs it compiled) while the group has items, a
    worker without one starts on a group nobody runs, and no worker waits while items remain."""
    import collections

    from fidec_gym.processes import WorkerPool, _Worker

    items = [("bc", 0), ("bc", 1), ("bc", 2), ("iql", 0), ("iql", 1), ("cube", 0)]
    pool = WorkerPool(len, 2, affinity=lambda item: item[0])
    first, second = _Worker(None, None), _Worker(None, None)
    pool._live = [first, second]
    queue = collections.deque(range(len(items)))
    groups = [pool.affinity(item) for item in items]
    taken = [pool._next_for(first, queue, groups), pool._next_for(second, queue, groups)]
    assert [items[i] for i in taken] == [("bc", 0), ("iql", 0)]  # the second does not start on bc
    assert items[pool._next_for(second, queue, groups)] == ("iql", 1)  # its own group, ahead of bc 1
    assert items[pool._next_for(second, queue, groups)] == ("cube", 0)  # a group nobody runs
    assert items[pool._next_for(second, queue, groups)] == ("bc", 1)  # nothing else left: it helps with bc
    assert items[pool._next_for(first, queue, groups)] == ("bc", 2) and not queue
    # The real pool runs every item once with affinity on.
    assert sorted(item for item, kind, _ in WorkerPool(len, 2, affinity=lambda item: item[0]).run(items)) == sorted(
        items
    )


_STUCK_WORKER = """
import sys, time
from pathlib import Path
from fidec_gym.processes import add_forced_exit_hook, worker_setup

worker_setup(graceful=True, grace=1.0, poll=0.1)
add_forced_exit_hook(lambda: Path(sys.argv[1]).write_text("left resumable"))
Path(sys.argv[1] + ".ready").touch()
while True:  # a clean-up that never finishes: every interrupt is swallowed
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        pass
"""


def test_a_worker_whose_clean_up_overruns_still_runs_its_forced_exit_hooks(tmp_path):
    """The parent dies, the worker's graceful clean-up does not finish within the grace: the hooks (a leaderboard
    cell's: mark its runs resumable) run before the worker is ended."""
    marker = tmp_path / "marker"
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); time.sleep(600)"]
        + [sys.executable, "-c", _STUCK_WORKER, str(marker)],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not Path(f"{marker}.ready").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + STOP_SECONDS
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.read_text() == "left resumable"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
