"""Leaderboard presets and the resumable grid: validation, kill -9 and resume, failing cells, Ray, bad input."""

import datetime
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fidec_gym.cli import main
from fidec_gym.eval.grid.leaderboard import (
    LeaderboardError,
    available_presets,
    leaderboard_status,
    load_preset,
    run_leaderboard,
)
from fidec_gym.eval.store import ResultsStore

TOY = "fidec/toy-bimodal-v0"
CUBE = "fidec/cube-single-play-singletask-task2-v0"
TINY_NETS = {"batch_size": 32, "actor_hidden_dims": [32, 32], "value_hidden_dims": [32, 32]}


def _write_preset(path: Path, **fields) -> Path:
    preset = {
        "name": path.stem,
        "agents": ["bc"],
        "tasks": [TOY],
        "seeds": [0],
        "offline_steps": 200,
        "eval_interval": 100,
        "eval_episodes": 10,
        "eval_workers": 1,
        "log_interval": 100,
        "checkpoint_interval": 100,
        "agent_overrides": {"all": TINY_NETS},
    }
    preset.update(fields)
    path.write_text(yaml.safe_dump(preset))
    return path


# ------------------------------------------------------------------------------------------ presets
@pytest.mark.parametrize("name", ["smoke", "quick", "ogbench-state", "ogbench-visual", "d4rl", "paper-table2"])
def test_builtin_presets_load(name):
    preset = load_preset(name)
    assert preset.name == name and preset.cells()
    assert set(available_presets()) >= {"smoke", "quick", "ogbench-state", "ogbench-visual", "d4rl", "paper-table2"}


def test_paper_table2_follows_the_protocol():
    cells = load_preset("paper-table2").cells()
    by_suite = {}
    for cell in cells:
        by_suite.setdefault(
            cell.env_id.split("/")[1].split("-")[0] == "visual"
            and "visual"
            or ("d4rl" if cell.env_id.endswith(("-v1", "-v2")) else "ogbench"),
            [],
        ).append(cell)
    assert len({c.env_id for c in cells}) == 73  # 50 state + 5 visual + 18 D4RL tasks of Table 2
    assert {c.settings["offline_steps"] for c in by_suite["ogbench"]} == {1_000_000}
    assert {c.settings["offline_steps"] for c in by_suite["visual"] + by_suite["d4rl"]} == {500_000}
    assert all(c.settings["eval_interval"] == 100_000 and c.settings["eval_episodes"] == 50 for c in cells)
    assert {len(c.seeds) for c in by_suite["visual"]} == {4} and {len(c.seeds) for c in by_suite["ogbench"]} == {8}
    assert not [c for c in by_suite["visual"] if c.agent == "bc"]
    assert all(c.agent_overrides == {"encoder": "impala_small"} for c in by_suite["visual"])


def test_plan_of_paper_table2_names_cells_runs_missing_data_and_time(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no measured costs: the reference table is used
    monkeypatch.setenv("FIDEC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["leaderboard", "plan", "--preset", "paper-table2"]) == 0
    out = capsys.readouterr().out
    assert "preset paper-table2: 433 cells, 3364 runs, 2882M updates" in out
    assert "datasets: 33 needed, 33 missing" in out
    assert (
        "antmaze-large-navigate-v0                MISSING (~0.2 GB): fidec data generate antmaze-large-navigate" in out
    )
    hours = re.search(r"estimated training time: ([\d,]+) h of one worker; ([\d,]+) h with 2 workers", out)
    one, two = (int(group.replace(",", "")) for group in hours.groups())
    assert 80_000 < one < 90_000 and abs(two - one / 2) <= 1


def test_plan_costs_an_agent_preset_as_its_base_agent(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["leaderboard", "plan", "--preset", "cpu-reference", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "preset cpu-reference: 14 cells, 42 runs, 3150K updates" in out
    assert "fidec 284.3, fidec-official 284.3" in out and "Traceback" not in out


def test_task_settings_override_their_suite_for_one_task(tmp_path):
    other = "fidec/toy-saddle-v0"
    preset = load_preset(
        _write_preset(
            tmp_path / "scoped.yaml",
            tasks=[TOY, other],
            suite_settings={
                "toy": {"offline_steps": 30, "seeds": [0, 1], "agent_overrides": {"bc": {"batch_size": 8}}}
            },
            task_settings={TOY.removeprefix("fidec/"): {"offline_steps": 60, "agent_overrides": {"all": {"lr": 1e-3}}}},
        )
    )
    cells = {cell.env_id: cell for cell in preset.cells()}
    assert cells[TOY].settings["offline_steps"] == 60 and cells[other].settings["offline_steps"] == 30
    assert cells[TOY].seeds == cells[other].seeds == (0, 1)  # the suite's, which the task does not change
    assert cells[TOY].settings["eval_interval"] == cells[other].settings["eval_interval"] == 100  # the preset's
    # Overrides merge key by key: the task's learning rate joins the suite's batch size and the preset's networks.
    networks = {"actor_hidden_dims": [32, 32]}  # bc has no value network: `all` passes it only the keys it has
    assert cells[TOY].agent_overrides == {**networks, "batch_size": 8, "lr": 1e-3}
    assert cells[other].agent_overrides == {**networks, "batch_size": 8}


def test_a_narrowed_preset_keeps_the_full_presets_cells():
    full = load_preset("cpu-reference")
    part = full.narrowed(agents=["rebrac"], tasks=["category:cube-single"], seeds=[0, 2])
    (cell,) = part.cells()
    same = next(c for c in full.cells() if c.name == cell.name)
    assert cell.seeds == (0, 2) and same.seeds == (0, 1, 2)
    # The same name, settings (the task's own 100K budget) and overrides: its runs are the full grid's runs.
    assert (cell.settings, cell.agent_overrides) == (same.settings, same.agent_overrides)
    assert cell.settings["offline_steps"] == 100_000
    assert list(part.datasets) == ["cube-single-play-v0"]  # the antmaze data is not made for a cube-only run
    assert full.narrowed(seeds=[1]).cells() and len(full.cells()) == 14  # the full preset is left as it was
    # OGBench's un-suffixed ID is the category's default task: it names the same cell as task2.
    (alias,) = full.narrowed(agents=["rebrac"], tasks=["cube-single-play-singletask-v0"]).cells()
    assert alias.name == cell.name


def test_narrowing_also_narrows_scoped_seeds(tmp_path):
    other = "fidec/toy-saddle-v0"
    preset = load_preset(
        _write_preset(tmp_path / "scoped.yaml", tasks=[TOY, other], task_settings={other: {"seeds": [3, 4]}})
    )
    assert {c.env_id: c.seeds for c in preset.narrowed(seeds=[4]).cells()} == {other: (4,)}
    assert {c.env_id: c.seeds for c in preset.narrowed(seeds=[0, 3]).cells()} == {TOY: (0,), other: (3,)}


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--agents", "fqll"], "--agents: 'fqll' is not an agent of preset cpu-reference (did you mean 'fql'"),
        (["--agents", ","], "--agents ',': name at least one"),
        (["--tasks", "cube-single-play-singletask-task1-v0"], "is not a task of preset cpu-reference (did you mean"),
        (["--tasks", "suite:d4rl"], "--tasks: suite:d4rl is not in preset cpu-reference; its tasks:"),
        (["--tasks", "cube-single-play-singletask-task9-v0"], "unknown task ID"),
        (["--seeds", "7"], "--seeds: [7] not among preset cpu-reference's seeds [0, 1, 2]"),
        (["--seeds", "zero"], "--seeds 'zero': give seed numbers, comma-separated"),
    ],
)
def test_bad_selections_of_a_preset_are_named(flags, message, capsys):
    assert main(["leaderboard", "run", "--preset", "cpu-reference", "--dry-run", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_grid_run_part_by_part_ends_as_one_run_whole(tmp_path, monkeypatch, capsys):
    """A narrowed run trains only its cells; the full preset run later into the same directory keeps them and
    trains the rest, as a grid too large for one sitting is run."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    other = "fidec/toy-saddle-v0"
    preset = _write_preset(tmp_path / "parts.yaml", tasks=[TOY, other], seeds=[0, 1])
    out = tmp_path / "out"
    base = ["leaderboard", "run", "--preset", str(preset), "--out", str(out), "--no-progress"]
    assert main([*base, "--tasks", other, "--seeds", "1"]) == 0
    store = ResultsStore(out)
    (first,) = store.runs()
    assert (first["env_id"], first["seed"], first["status"]) == (other, 1, "done")
    evaluations = store.evaluations(first["id"])
    capsys.readouterr()
    assert main(["leaderboard", "status", "--out", str(out)]) == 0
    assert "cells: 1/1 done; runs: 1 done" in capsys.readouterr().out  # the other cells are not registered yet
    # Given the preset, status also counts the runs still to start: 3 of the 4, at 200 updates each.
    assert main(["leaderboard", "status", "--out", str(out), "--preset", str(preset)]) == 0
    shown = capsys.readouterr().out
    assert "cells: 0/2 done; runs: 1 done, 0 running, 0 interrupted, 0 failed, 3 pending" in shown
    assert "updates: 200/800 (25 %)" in shown and "| partial |" in shown

    assert main(base) == 0
    runs = {(run["env_id"], run["seed"]): run for run in store.runs()}
    assert len(runs) == 4 and {run["status"] for run in runs.values()} == {"done"}
    assert runs[(other, 1)]["id"] == first["id"] and store.evaluations(first["id"]) == evaluations  # not trained again
    store.close()


def test_smoke_preset_shape():
    preset = load_preset("smoke")
    assert preset.agents == ["bc", "iql", "rebrac", "fql", "deflow", "fidec"]
    assert all(TOY in preset.tasks or t.startswith("fidec/toy") for t in preset.tasks)
    bc = next(c for c in preset.cells() if c.agent == "bc")
    assert "value_hidden_dims" not in bc.agent_overrides  # `all` only passes keys the agent has


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"agnets": ["bc"]}, "unknown key 'agnets' (did you mean 'agents'"),
        ({"agents": ["fidek"]}, "unknown agent 'fidek' (did you mean 'fidec'?)"),
        ({"tasks": ["fidec/toy-bimodal-v1"]}, "Did you mean: fidec/toy-bimodal-v0"),
        ({"tasks": ["category:cube-singel"]}, "unknown category 'cube-singel'"),
        ({"seeds": [0, 0]}, "duplicates"),
        ({"offline_steps": -5}, "non-negative integer"),
        ({"agent_overrides": {"bc": {"hidden_dims": [8]}}}, "unknown key 'hidden_dims'"),
        ({"suite_settings": {"toys": {}}}, "unknown key 'toys' (did you mean 'toy'?)"),
        (
            {"task_settings": {"toy-bimodal-v1": {}}},
            "task_settings: unknown task ID 'toy-bimodal-v1'. Did you mean: fidec/toy-bimodal-v0",
        ),
        (
            {"task_settings": {"toy-saddle-v0": {}}},
            "names 'fidec/toy-saddle-v0', which is not one of the preset's tasks",
        ),
        ({"task_settings": {TOY: {"offline_step": 5}}}, "unknown key 'offline_step' (did you mean 'offline_steps'"),
        ({"task_settings": [TOY]}, "task_settings must be a mapping of task IDs to settings, got list"),
        ({"datasets": {"cube-single-play": {"path": "/x"}}}, "unknown dataset 'cube-single-play'"),
        ({"offline_steps": float("nan")}, "offline_steps must be a non-negative integer, got nan"),
        ({"eval_interval": float("inf")}, "eval_interval must be a non-negative integer, got inf"),
        ({"datasets": {"cube-single-play-v0": {"path": 5}}}, "datasets.cube-single-play-v0.path must be"),
        ({"datasets": {"cube-single-play-v0": {"generate": {"episodes": -1}}}}, "episodes must be a whole number >= 1"),
        ({"datasets": {"cube-single-play-v0": {"generate": {"episodes": "lots"}}}}, "got 'lots'"),
        ({"datasets": {"cube-single-play-v0": {"generate": {"seed": 1.5}}}}, "seed must be a whole number >= 0"),
        ({"datasets": {"cube-single-play-v0": {"generate": {"workers": 0}}}}, "workers must be a whole number >= 1"),
    ],
)
def test_preset_validation(tmp_path, fields, message):
    with pytest.raises(LeaderboardError, match=re.escape(message)):
        load_preset(_write_preset(tmp_path / "bad.yaml", **fields))


def test_preset_file_that_is_not_yaml_text(tmp_path, capsys):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)))
    assert main(["leaderboard", "plan", "--preset", str(binary)]) == 2
    assert "is not a text file" in capsys.readouterr().err
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(LeaderboardError, match="is a directory, not a YAML file"):
        load_preset(tmp_path / "folder.yaml")


def test_unknown_preset_name(capsys):
    assert main(["leaderboard", "run", "--preset", "smok", "--out", "/tmp/never-written"]) == 2
    assert "unknown preset 'smok' (did you mean 'smoke'?)" in capsys.readouterr().err
    assert not Path("/tmp/never-written").exists()


# ------------------------------------------------------------------------------------------ bad output dirs
def test_newer_schema_is_refused(tmp_path, capsys):
    ResultsStore(tmp_path).close()
    with sqlite3.connect(tmp_path / "results.sqlite") as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["leaderboard", "run", "--preset", "smoke", "--out", str(tmp_path)]) == 2
    assert "schema version 99" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no runs/, no data/


def test_unwritable_output_directory(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["leaderboard", "run", "--preset", "smoke", "--out", str(blocker / "results")]) == 2
    assert "cannot create the results directory" in capsys.readouterr().err


def test_unreachable_ray_address_fails_fast(tmp_path, capsys):
    start = time.monotonic()
    code = main(
        [
            "leaderboard",
            "run",
            "--preset",
            "smoke",
            "--out",
            str(tmp_path / "r"),
            "--backend",
            "ray",
            "--ray-address",
            "127.0.0.1:9",
        ]
    )
    assert code == 2 and time.monotonic() - start < 10
    assert "cannot reach the Ray cluster at 127.0.0.1:9" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_status_of_missing_results(tmp_path, capsys):
    assert main(["leaderboard", "status", "--out", str(tmp_path)]) == 2
    assert "fidec leaderboard run --preset" in capsys.readouterr().err


def test_plan_workers_must_be_positive(capsys):
    assert main(["leaderboard", "plan", "--preset", "smoke", "--workers", "0"]) == 2
    assert "--workers must be at least 1, got 0" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ running grids
def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "fidec_gym.cli", "leaderboard", *args]


def _env(data_dir: Path) -> dict:
    # An empty data directory: the cube-single cells fail (no dataset) while the toy cells train.
    return {**os.environ, "FIDEC_DATA_DIR": str(data_dir), "JAX_PLATFORMS": "cpu"}


def test_kill_and_resume_with_a_failing_cell(tmp_path):
    saddle = "fidec/toy-saddle-v0"
    # Cells run in order: bc on cube-single (fails: no data), on the bimodal toy (finishes), on the saddle toy
    # (killed with SIGKILL after its first checkpoint). The two toy cells share their programs, so the worker takes
    # them one after the other whatever the order of the tasks.
    preset = _write_preset(
        tmp_path / "grid.yaml", tasks=[CUBE, TOY, saddle], offline_steps=2000, eval_interval=1000, log_interval=500
    )
    out, data = tmp_path / "out", tmp_path / "data"
    data.mkdir()
    command = _cli("run", "--preset", str(preset), "--out", str(out), "--workers", "1", "--no-progress")
    process = subprocess.Popen(
        command, env=_env(data), start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    killed_during = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
            if not (out / "results.sqlite").exists():
                continue
            run = ResultsStore(out).find_run(agent="bc", env_id=saddle, seed=0, cell=f"grid:bc:{saddle[6:]}")
            if run and run["status"] == "running" and (run["last_good_step"] or 0) >= 100:
                killed_during = run
                break
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the whole group: the CLI and its pool worker
        process.wait()
    assert killed_during is not None, process.stdout.read().decode()[-3000:]
    kill_time = datetime.datetime.now(datetime.timezone.utc)

    for _ in range(50):  # SIGKILL is delivered asynchronously: give the worker a moment to be gone
        states = {row["cell"]: row["state"] for row in leaderboard_status(out)[0]}
        if states["grid:bc:toy-saddle-v0"] != "running":
            break
        time.sleep(0.2)
    assert states == {
        "grid:bc:toy-bimodal-v0": "done",
        "grid:bc:cube-single-play-singletask-task2-v0": "failed",
        "grid:bc:toy-saddle-v0": "interrupted",
    }

    rerun = subprocess.run(command, env=_env(data), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "1 cells finished now, 2 skipped" in rerun.stdout

    store = ResultsStore(out)
    runs = store.runs()
    assert sorted(r["env_id"] for r in runs) == sorted([TOY, CUBE, saddle])  # every cell once, none lost
    by_task = {r["env_id"]: r for r in runs}
    assert by_task[TOY]["status"] == by_task[saddle]["status"] == "done"
    assert by_task[CUBE]["status"] == "failed" and "cube-single-play" in by_task[CUBE]["message"]
    for task in (TOY, saddle):
        assert [e["step"] for e in store.evaluations(by_task[task]["id"])] == [1, 1000, 2000]
        assert by_task[task]["summary"]["score_rule"]
    # The interrupted run resumed from its checkpoint (a restart would have cleared its history): its first
    # evaluation predates the kill.
    first = store.evaluations(by_task[saddle]["id"])[0]
    assert datetime.datetime.fromisoformat(first["created"]) < kill_time

    finished = subprocess.run(_cli("status", "--out", str(out)), capture_output=True, text=True, env=_env(data))
    assert "cells: 2/3 done" in finished.stdout and "1 failed" in finished.stdout
    assert "cube-single-play" in finished.stdout  # the failure's message is shown


def test_ray_backend_local_start(tmp_path):
    pytest.importorskip("ray")
    preset = load_preset(
        _write_preset(
            tmp_path / "ray.yaml",
            agents=["bc"],
            tasks=[TOY, "fidec/toy-saddle-v0"],
            offline_steps=100,
            eval_interval=100,
            checkpoint_interval=100,
        )
    )
    # One Ray CPU: the two cells run one after the other in one worker, which compiles the agent once.
    result = run_leaderboard(preset, tmp_path / "out", backend="ray", workers=1, progress=False)
    assert result.ok and sorted(result.done) == ["ray:bc:toy-bimodal-v0", "ray:bc:toy-saddle-v0"]
    runs = ResultsStore(tmp_path / "out").runs()
    assert [r["status"] for r in runs] == ["done", "done"]
    again = run_leaderboard(preset, tmp_path / "out", backend="ray", workers=1, progress=False)
    assert again.done == [] and len(again.skipped) == 2  # nothing re-run, and Ray is not even needed
