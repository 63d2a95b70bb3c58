"""Reliability of the leaderboard and the trainer around bad input and a hostile machine: preset values checked at
load time, a fixed preset rerunning its failed cells, advice that works when followed, read-only results, two grids
on one directory, and a full disk. Each test checks the message, the exit code and what is (and is not) on disk."""

import contextlib
import errno
import itertools
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from fidec_gym.cli import main
from fidec_gym.eval.grid.leaderboard import LeaderboardError, load_preset, register_cells
from fidec_gym.eval.run.checkpoint import list_checkpoints
from fidec_gym.eval.store import ResultsStore

TOY = "fidec/toy-bimodal-v0"
TINY = {"batch_size": 16, "actor_hidden_dims": [16, 16], "value_hidden_dims": [16, 16]}


def _preset(path: Path, **fields) -> Path:
    preset = {
        "name": path.stem,
        "agents": ["bc"],
        "tasks": [TOY],
        "seeds": [0],
        "offline_steps": 40,
        "eval_interval": 20,
        "eval_episodes": 4,
        "eval_workers": 1,
        "log_interval": 20,
        "checkpoint_interval": 20,
        "agent_overrides": {"all": dict(TINY)},
    }
    preset.update(fields)
    path.write_text(yaml.safe_dump(preset))
    return path


def _lines(text: str) -> list[str]:
    """The error lines of a command's stderr (`leaderboard run` prints its plan line first)."""
    return [line for line in text.splitlines() if line.strip() and not line.startswith("preset ")]


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


# ------------------------------------------------------------------------------------------------ item 2: presets
@pytest.mark.parametrize(
    "fields, message",
    [
        (
            {"agent_overrides": {"all": {"actor_hidden_dims": "abc"}}},
            "agent_overrides.all: bc config actor_hidden_dims='abc': expected a list of positive whole numbers, "
            "e.g. actor_hidden_dims: [",
        ),
        (
            {"agent_overrides": {"bc": {"batch_size": 1.5}}},
            "agent_overrides.bc: bc config batch_size=1.5: expected a whole number",
        ),
        (
            {"agent_overrides": {"iql": {"discount": [0.9]}}},
            "agent_overrides.iql: iql config discount=[0.9]: expected a number",
        ),
        ({"agent_overrides": {"bc": {"lr": "fast"}}}, "bc config lr='fast': expected a number like"),
        ({"agent_overrides": {"bc": {"batch_size": 0}}}, "bc config batch_size=0: must be >= 1"),
        (
            {"offline_steps": 0},
            "cell bad:bc:toy-bimodal-v0, seed 0: nothing to train: set offline_steps or online_steps > 0",
        ),
        ({"suite_settings": {"toy": {"offline_steps": 0}}}, "nothing to train: set offline_steps or online_steps > 0"),
        ({"eval_episodes": 0}, "eval_episodes must be >= 1, got 0"),
        ({"seeds": [-1, 0]}, "seeds must be >= 0, got [-1] in [-1, 0]"),
        ({"seeds": 0}, "seeds must be a positive count or a list of integers >= 0, got 0"),
        ({"exclude": [{"agent": "bc"}]}, "the exclude rules remove every cell"),
        ({"name": "a:b"}, "name must be a non-empty string without '/' or ':'"),
    ],
)
def test_bad_preset_values_are_rejected_at_load(tmp_path, fields, message):
    with pytest.raises(LeaderboardError) as caught:
        load_preset(_preset(tmp_path / "bad.yaml", **fields))
    assert message in str(caught.value)
    assert "--set" not in str(caught.value) and "(--" not in str(caught.value)  # preset advice, not CLI flags


def test_yaml_exponents_are_numbers(tmp_path):
    # YAML 1.1 reads 3e-4 as text; in a preset it is the learning rate the user meant.
    preset = load_preset(_preset(tmp_path / "lr.yaml", agent_overrides={"bc": {"lr": "3e-4"}}))
    assert preset.cells()[0].agent_overrides["lr"] == pytest.approx(3e-4)


def test_a_folder_named_like_a_built_in_preset_does_not_hide_it(tmp_path, monkeypatch):
    # `fidec leaderboard run --preset cpu-reference --out cpu-reference`, run again from the same folder.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cpu-reference").mkdir()
    assert load_preset("cpu-reference").name == "cpu-reference"
    with pytest.raises(FileNotFoundError, match="preset file missing.yaml does not exist"):
        load_preset("missing.yaml")


def test_an_identical_generated_dataset_is_linked_not_generated_again(tmp_path, monkeypatch, capsys):
    from fidec_gym.envs.generate import generate_manipulation_dataset
    from fidec_gym.eval.grid.cells import prepare_datasets

    made = tmp_path / "made"
    generate_manipulation_dataset("cube-single-play", 1, made, seed=3, progress=False)  # 1 + 1 episodes of 1001 rows
    monkeypatch.setenv("FIDEC_DATA_DIR", str(made))
    data = tmp_path / "out" / "data"
    same = load_preset(
        _preset(tmp_path / "same.yaml", datasets={"cube-single-play-v0": {"generate": {"episodes": 1, "seed": 3}}})
    )
    assert prepare_datasets(same, data, progress=False) == [data / "cube-single-play-v0.npz"]
    for name in ("cube-single-play-v0.npz", "cube-single-play-v0-val.npz", "cube-single-play-v0.meta.json"):
        assert os.path.samefile(data / name, made / name)
    reused = f"reusing {made / 'cube-single-play-v0.npz'} (same generator settings: seed 3, 1 episodes)"
    assert reused in capsys.readouterr().out
    assert sorted(p.name for p in data.iterdir()) == sorted(p.name for p in made.iterdir())  # no temporaries left

    from fidec_gym.eval.grid.cells import _link_identical_dataset, _play_settings

    other = tmp_path / "other"
    assert not _link_identical_dataset("cube-single-play-v0", _play_settings(4, 1), other)  # another seed: other data
    assert not _link_identical_dataset("cube-single-play-v0", _play_settings(3, 2), other)  # another size
    assert not other.exists()

    # Navigate data must also come from the same expert (by SHA-256) with the same action noise.
    from fidec_gym.eval.grid.cells import _navigate_settings

    navigate = tmp_path / "navigate"
    navigate.mkdir()
    settings = _navigate_settings("antmaze-large-navigate", 0, 1000)
    assert (
        settings["max_episode_steps"] == 1001 and settings["noise"] == 0.2 and len(settings["expert"]["sha256"]) == 64
    )
    for name in ("antmaze-large-navigate-v0.npz", "antmaze-large-navigate-v0-val.npz"):
        (navigate / name).write_bytes(b"")
    sidecar = navigate / "antmaze-large-navigate-v0.meta.json"
    monkeypatch.setenv("FIDEC_DATA_DIR", str(navigate))
    for expert, linked in (("0" * 64, False), (settings["expert"]["sha256"], True)):
        sidecar.write_text(json.dumps({**settings, "expert": {"sha256": expert, "name": "ant"}, "workers": 2}))
        assert _link_identical_dataset("antmaze-large-navigate-v0", settings, other) is linked
    assert os.path.samefile(other / "antmaze-large-navigate-v0.meta.json", sidecar)


def test_a_generated_dataset_is_kept_in_the_user_cache_for_the_next_results_directory(tmp_path, monkeypatch, capsys):
    from fidec_gym.eval.grid.cells import _play_settings, generated_data_cache, prepare_datasets

    monkeypatch.setenv("FIDEC_DATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FIDEC_DATA_DIR", str(tmp_path / "empty"))
    preset = load_preset(
        _preset(tmp_path / "p.yaml", datasets={"cube-single-play-v0": {"generate": {"episodes": 1, "seed": 5}}})
    )
    first, second = tmp_path / "first" / "data", tmp_path / "second" / "data"
    prepare_datasets(preset, first, progress=False)
    cache = generated_data_cache("cube-single-play-v0", _play_settings(5, 1))
    assert cache is not None and cache.parent == tmp_path / "cache"
    first_output = capsys.readouterr().out
    assert "reusing" not in first_output and f"kept in {cache}" in first_output  # simulated the first time
    prepare_datasets(preset, second, progress=False)
    assert f"reusing {cache / 'cube-single-play-v0.npz'}" in capsys.readouterr().out
    for name in ("cube-single-play-v0.npz", "cube-single-play-v0-val.npz", "cube-single-play-v0.meta.json"):
        assert os.path.samefile(second / name, first / name) and os.path.samefile(cache / name, first / name)
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in first.iterdir())  # no temporaries
    # Other settings are other data; FIDEC_DATA_CACHE=0 keeps nothing.
    assert generated_data_cache("cube-single-play-v0", _play_settings(6, 1)) != cache
    monkeypatch.setenv("FIDEC_DATA_CACHE", "0")
    assert generated_data_cache("cube-single-play-v0", _play_settings(5, 1)) is None


def test_bad_preset_fails_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "out"
    bad = _preset(tmp_path / "bad.yaml", agent_overrides={"bc": {"batch_size": 1.5}})
    assert main(["leaderboard", "run", "--preset", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(_lines(err)) == 1 and "batch_size=1.5: expected a whole number" in err
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ a finished grid
CUBE = "fidec/cube-single-play-singletask-task2-v0"


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """bc on a toy task (finishes) and on cube-single without its dataset (fails: no data)."""
    root = tmp_path_factory.mktemp("grid")
    (root / "no-data").mkdir()
    preset = _preset(root / "grid.yaml", tasks=[TOY, CUBE], eval_episodes=2)
    out = root / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FIDEC_DATA_DIR", str(root / "no-data"))
        assert main(["leaderboard", "run", "--preset", str(preset), "--out", str(out), "--no-progress"]) == 1
    statuses = {run["env_id"]: run["status"] for run in ResultsStore(out).runs()}
    assert statuses == {TOY: "done", CUBE: "failed"}
    return root


def _copy(grid: Path, tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    monkeypatch.setenv("FIDEC_DATA_DIR", str(grid / "no-data"))
    shutil.copytree(grid / "out", tmp_path / "out")
    return tmp_path / "out", Path(shutil.copy(grid / "grid.yaml", tmp_path / "grid.yaml"))


def _edit(preset: Path, change) -> None:
    raw = yaml.safe_load(preset.read_text())
    change(raw)
    preset.write_text(yaml.safe_dump(raw))


def _contents(out: Path) -> dict:
    """What the store holds (its side files -wal/-shm aside) and every other file with its size and time."""
    store = ResultsStore.open_for_reading(out)
    files = {k: v for k, v in _snapshot(out).items() if not k.startswith("results.sqlite")}
    return {"runs": store.runs(), "evaluations": store.evaluations(), "artefacts": store.artefacts(), "files": files}


# ------------------------------------------------------------------------------------------------ item 3: fixed presets
def test_a_fixed_preset_reruns_its_failed_cells(grid, tmp_path, capsys, monkeypatch):
    pytest.importorskip("ogbench")
    out, preset = _copy(grid, tmp_path, monkeypatch)
    store = ResultsStore(out)
    toy_before = store.find_run(agent="bc", env_id=TOY, seed=0, cell="grid:bc:toy-bimodal-v0")
    toy_evaluations = store.evaluations(toy_before["id"])
    # The fix: the preset generates the cube data it lacked (one episode, and one for validation).
    _edit(preset, lambda raw: raw.update(datasets={"cube-single-play-v0": {"generate": {"episodes": 1}}}))

    # Without --retry-failed: refused, naming the cell, the key, and the flag; nothing changes.
    before = _contents(out)
    assert main(["leaderboard", "run", "--preset", str(preset), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    cell = "cell grid:bc:cube-single-play-singletask-task2-v0"
    assert f"{cell} (dataset_path: None -> '{out / 'data'}') failed with other settings" in err, err
    assert "add --retry-failed" in err
    assert _contents(out) == before

    # Following the advice reruns the failed cell with the new settings; the finished cell is untouched.
    command = ["leaderboard", "run", "--preset", str(preset), "--out", str(out), "--no-progress", "--retry-failed"]
    assert main(command) == 0
    assert "1 cells finished now, 1 skipped" in capsys.readouterr().out
    cube = store.find_run(agent="bc", env_id=CUBE, seed=0, cell="grid:bc:cube-single-play-singletask-task2-v0")
    assert cube["status"] == "done" and cube["config"]["dataset_path"] == str(out / "data")
    assert [e["step"] for e in store.evaluations(cube["id"])] == [1, 20, 40]  # only the new run's rows
    assert store.evaluations(toy_before["id"]) == toy_evaluations
    assert len(store.runs()) == 2


def test_a_changed_finished_cell_is_refused(grid, tmp_path, capsys, monkeypatch):
    out, preset = _copy(grid, tmp_path, monkeypatch)
    _edit(preset, lambda raw: raw["agent_overrides"]["all"].update(batch_size=32))
    before = _contents(out)
    for retry in ([], ["--retry-failed"]):
        assert main(["leaderboard", "run", "--preset", str(preset), "--out", str(out), *retry]) == 2
        err = capsys.readouterr().err
        assert "cell grid:bc:toy-bimodal-v0 (agent_overrides.batch_size: 16 -> 32) finished with other settings" in err
        assert "new directory (--out)" in err and "new name (`name:` in the YAML)" in err
        assert _contents(out) == before  # never mixes old and new results

    # Following the advice: a new name registers new cells beside the old ones.
    _edit(preset, lambda raw: raw.update(name="grid-v2"))
    store = ResultsStore(out)
    renamed = load_preset(preset)
    ids = register_cells(store, renamed, renamed.cells(out / "data"), out)
    assert len(ids) == 2 and len(store.runs()) == 4


@pytest.mark.parametrize("how", ["--one-seed-per-process", "--seeds-together"])
def test_a_larger_budget_extends_finished_runs_exactly(tmp_path, capsys, how):
    # 20 updates, then the preset asks for 40: the runs continue from their step-20 checkpoints and end exactly where
    # runs given 40 updates from the start end. DeFlow keeps the offline budget in its own config too.
    def preset(name: str, steps: int) -> Path:
        path = tmp_path / f"{name}-{steps}.yaml"
        return _preset(path, name="grid", agents=["bc", "deflow"], seeds=[0, 1], offline_steps=steps, eval_interval=10)

    def run(name: str, steps: int) -> ResultsStore:
        command = ["leaderboard", "run", "--preset", str(preset(name, steps)), "--out", str(tmp_path / name)]
        assert main([*command, "--no-progress", how]) == 0
        return ResultsStore(tmp_path / name)

    run("extended", 20)
    # Registering the larger budget sends the finished runs back to their step-20 checkpoints: half of it is trained.
    longer = load_preset(preset("extended", 40))
    register_cells(ResultsStore(tmp_path / "extended"), longer, longer.cells(), tmp_path / "extended")
    capsys.readouterr()
    assert main(["leaderboard", "status", "--out", str(tmp_path / "extended")]) == 0
    out = capsys.readouterr().out
    assert "| grid:deflow:toy-bimodal-v0 | interrupted | 0 | 0 | 2 | 0 | 0 | 40/80 (50 %) |" in out
    assert "updates: 80/160 (50 %)" in out
    extended = run("extended", 40)
    assert "2 cells finished now, 0 skipped" in capsys.readouterr().out
    fresh = run("fresh", 40)
    for agent, seed in itertools.product(("bc", "deflow"), (0, 1)):
        runs = [
            store.find_run(agent=agent, env_id=TOY, seed=seed, cell=f"grid:{agent}:toy-bimodal-v0")
            for store in (extended, fresh)
        ]
        assert [r["status"] for r in runs] == ["done", "done"] and runs[0]["config"]["offline_steps"] == 40
        rows = [
            [(e["step"], e["metrics"]) for e in store.evaluations(r["id"])] for store, r in zip((extended, fresh), runs)
        ]
        assert [step for step, _ in rows[0]] == [1, 10, 20, 30, 40] and rows[0] == rows[1]
        assert runs[0]["summary"]["final"] == runs[1]["summary"]["final"]
    # A smaller budget, or anything else changed, is still refused for a finished cell.
    smaller = preset("extended", 30)
    assert main(["leaderboard", "run", "--preset", str(smaller), "--out", str(tmp_path / "extended"), how]) == 2
    assert "(offline_steps: 40 -> 30) finished with other settings" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ item 5: read-only
@contextlib.contextmanager
def _read_only(source: Path, view: Path, monkeypatch, how: str):
    """``source`` seen read-only. Tests run as root, which ignores ``chmod -R a-w``, so two ways:

    * ``bind``: a read-only bind mount of it (the kernel refuses every write, even root's); needs CAP_SYS_ADMIN,
      skipped where the machine does not allow it;
    * ``os.access``: ``os.access`` reports it unwritable, which is what fidec-gym looks at to open the store
      read-only (SQLite ``mode=ro``); runs everywhere, but root can still create SQLite's ``-wal``/``-shm`` side
      files, so those are left out of the comparison.
    """
    if how == "os.access":
        real = os.access
        resolved = source.resolve()

        def access(path, mode, *args, **kwargs):
            inside = Path(path).resolve() == resolved or resolved in Path(path).resolve().parents
            return False if inside and mode & os.W_OK else real(path, mode, *args, **kwargs)

        monkeypatch.setattr(os, "access", access)
        yield source
        return
    view.mkdir()
    try:
        subprocess.run(["mount", "--bind", str(source), str(view)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"no read-only bind mount on this machine ({error})")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True, capture_output=True)
        yield view
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


@pytest.mark.parametrize("how", ["bind", "os.access"])
def test_read_only_results(grid, tmp_path, capsys, monkeypatch, how):
    out, preset = _copy(grid, tmp_path, monkeypatch)
    side_files = ("results.sqlite-wal", "results.sqlite-shm")
    before = {k: v for k, v in _snapshot(out).items() if k not in side_files}
    with _read_only(out, tmp_path / "ro", monkeypatch, how) as ro:
        assert main(["leaderboard", "status", "--out", str(ro)]) == 0
        assert "cells: 1/2 done" in capsys.readouterr().out

        assert main(["leaderboard", "compare", "--out", str(ro), "--reps", "20"]) == 0
        captured = capsys.readouterr()
        assert "toy-bimodal" in captured.out
        assert "tables not written: " in captured.err and "pass --report-dir DIR" in captured.err

        tables = ["leaderboard", "compare", "--out", str(ro), "--reps", "20", "--report-dir", str(tmp_path / "t")]
        assert main(tables) == 0
        assert (tmp_path / "t" / "tasks.csv").is_file()

        assert main(["leaderboard", "report", "--out", str(ro), "--reps", "20"]) == 2
        err = capsys.readouterr().err
        assert "pass --report-dir DIR to write it elsewhere" in err, err
        # Following the advice works.
        report = ["leaderboard", "report", "--out", str(ro), "--reps", "20", "--report-dir", str(tmp_path / "r")]
        assert main(report) == 0
        assert (tmp_path / "r" / "index.html").is_file() and (tmp_path / "r" / "report.md").is_file()

        # A command that must write says so in one line.
        assert main(["leaderboard", "run", "--preset", str(preset), "--out", str(ro)]) == 2
        assert "is not writable; choose a writable directory with --out" in capsys.readouterr().err
    after = {k: v for k, v in _snapshot(out).items() if k not in side_files}
    assert after == before  # nothing in the results directory was touched


# ------------------------------------------------------------------------------------------------ item 4: advice
TRAIN = [
    "train",
    "--agent",
    "bc",
    "--env",
    TOY,
    "--eval-episodes",
    "4",
    "--eval-workers",
    "1",
    "--log-interval",
    "2",
    "--eval-interval",
    "2",
    "--set",
    "batch_size=16",
    "--set",
    "actor_hidden_dims=[16,16]",
    "--no-progress",
]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def test_export_is_self_contained_and_the_report_rebuilds_from_it(grid, tmp_path, capsys):
    out, shared = grid / "out", tmp_path / "elsewhere" / "cpu-results"
    assert main(["leaderboard", "export", "--out", str(out), "--to", str(shared)]) == 0
    assert "exported 2 runs, " in capsys.readouterr().out
    original, exported = ResultsStore.open_for_reading(out), ResultsStore.open_for_reading(shared)
    assert exported.runs() == original.runs() and exported.evaluations() == original.evaluations()
    assert sorted(p.name for p in shared.iterdir()) == ["results.sqlite", "runs"]  # no -wal/-shm, no checkpoints
    originals = {a["id"]: out / a["path"] for a in original.artefacts()}  # out / an absolute path = that path
    assert exported.artefacts(kind="metrics") and not exported.artefacts(kind="checkpoint")
    assert len(exported.artefacts()) == len(originals) - len(original.artefacts(kind="checkpoint"))
    for artefact in exported.artefacts():
        assert not Path(artefact["path"]).is_absolute() and ":" not in artefact["path"]
        assert (shared / artefact["path"]).read_bytes() == originals[artefact["id"]].read_bytes()
    assert not list(shared.rglob("*.msgpack")) and not list(shared.rglob("step_*"))
    assert (
        main(["leaderboard", "report", "--out", str(shared), "--reps", "20", "--report-dir", str(tmp_path / "r")]) == 0
    )
    assert "Runs: 1 done" in (tmp_path / "r" / "report.md").read_text()
    # Exporting again replaces the folder; exporting into the results directory itself is refused.
    assert main(["leaderboard", "export", "--out", str(out), "--to", str(shared), "--preset", "grid"]) == 0
    precious = tmp_path / "precious"
    (precious / "notes").mkdir(parents=True)
    assert main(["leaderboard", "export", "--out", str(out), "--to", str(precious)]) == 2
    assert "holds files that are not an earlier export" in capsys.readouterr().err and (precious / "notes").is_dir()
    assert main(["leaderboard", "export", "--out", str(out), "--to", str(out / "copy")]) == 2
    assert "outside the results directory" in capsys.readouterr().err and not (out / "copy").exists()
    assert main(["leaderboard", "export", "--out", str(out), "--to", str(tmp_path / "x"), "--preset", "nope"]) == 2
    assert "no runs of preset 'nope'" in capsys.readouterr().err and not (tmp_path / "x").exists()
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")  # a file is refused as the target, never replaced by the export folder
    assert main(["leaderboard", "export", "--out", str(out), "--to", str(blocker)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err and blocker.read_text() == "mine"
    # status of a preset that has no runs there names the presets that do
    assert main(["leaderboard", "status", "--out", str(out), "--preset", "nope"]) == 2
    assert "no runs of preset 'nope'; presets with runs there: ['grid']" in capsys.readouterr().err


def test_truncated_checkpoint_advice_works(tmp_path, capsys):
    out = tmp_path / "out"
    base = [*TRAIN, "--steps", "4", "--checkpoint-interval", "2", "--out", str(out)]
    assert main(base) == 0
    run_dir = next((out / "runs").iterdir())
    steps = [step for step, _ in list_checkpoints(run_dir)]
    assert steps == [2, 4]

    # The newest checkpoint is damaged: a warning, and the run resumes from the one before.
    _truncate(run_dir / "checkpoints" / "step_0000000004" / "agent.msgpack")
    capsys.readouterr()
    assert main([*base, "--resume"]) == 0
    captured = capsys.readouterr()
    assert (
        "warning:" in captured.out + captured.err
        and "resuming from the previous checkpoint" in captured.out + captured.err
    )

    # Only one checkpoint left, and it is damaged: the message says what to do, and doing it works.
    for _, path in list_checkpoints(run_dir)[:-1]:
        shutil.rmtree(path)
    _truncate(list_checkpoints(run_dir)[-1][1] / "agent.msgpack")
    assert main([*base, "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"delete {run_dir}" in err and "train without --resume" in err, err
    shutil.rmtree(run_dir)
    assert main(base) == 0
    assert ResultsStore(out).runs()[0]["status"] == "done"


# ------------------------------------------------------------------------------------------------ item 7: disk full
def _enospc_after(monkeypatch, calls: int) -> None:
    """``os.fsync`` (the checkpoint writer's) fails with ENOSPC after ``calls`` successful calls."""
    real, left = os.fsync, [calls]

    def fsync(fd):
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        left[0] -= 1
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def _consistent(out: Path) -> None:
    with sqlite3.connect(out / "results.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_disk_full_while_training_then_resume(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    base = [*TRAIN, "--steps", "6", "--checkpoint-interval", "2", "--out", str(out)]
    _enospc_after(monkeypatch, 3)  # one checkpoint (3 fsyncs) fits; the second does not
    assert main(base) == 28
    err = capsys.readouterr().err
    assert len(_lines(err)) == 1, err  # one message
    assert f"the directory {out}" in err and "free space" in err and "add --resume" in err, err
    run_dir = next((out / "runs").iterdir())
    assert [step for step, _ in list_checkpoints(run_dir)] == [2]  # the last good checkpoint is kept
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]  # no half-written one
    _consistent(out)
    run = ResultsStore(out).runs()[0]
    assert run["status"] != "running" and run["last_good_step"] == 2

    monkeypatch.undo()  # space freed
    assert main([*base, "--resume"]) == 0
    run = ResultsStore(out).runs()[0]
    assert run["status"] == "done" and [e["step"] for e in ResultsStore(out).evaluations(run["id"])] == [1, 2, 4, 6]


def test_disk_full_in_the_store_then_resume(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    base = [*TRAIN, "--steps", "4", "--checkpoint-interval", "2", "--out", str(out)]
    real, calls = ResultsStore.add_evaluation, []

    def add_evaluation(self, run_id, step, metrics):
        calls.append(step)
        if step >= 4:
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, run_id, step, metrics)

    monkeypatch.setattr(ResultsStore, "add_evaluation", add_evaluation)
    assert main(base) == 28
    err = capsys.readouterr().err
    assert len(_lines(err)) == 1 and f"in {out} cannot grow: the disk is full" in err, err
    _consistent(out)
    monkeypatch.undo()
    assert main([*base, "--resume"]) == 0
    run = ResultsStore(out).runs()[0]
    assert run["status"] == "done" and [e["step"] for e in ResultsStore(out).evaluations(run["id"])] == [1, 2, 4]


SITECUSTOMIZE = textwrap.dedent(
    """
    # Test injection, loaded by the spawned leaderboard workers only: os.fsync (the checkpoint writer's) fails with
    # ENOSPC after FIDEC_TEST_ENOSPC_AFTER calls.
    import errno, os

    if os.environ.get("FIDEC_TEST_ENOSPC_AFTER"):
        _real, _left = os.fsync, [int(os.environ["FIDEC_TEST_ENOSPC_AFTER"])]

        def _fsync(fd):
            if _left[0] <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            _left[0] -= 1
            return _real(fd)

        os.fsync = _fsync
    """
)


def test_disk_full_stops_the_grid_then_resume(tmp_path, capsys, monkeypatch):
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(SITECUSTOMIZE)
    preset = _preset(tmp_path / "full.yaml", tasks=[TOY, "fidec/toy-saddle-v0"], checkpoint_interval=10)
    out = tmp_path / "out"
    command = ["leaderboard", "run", "--preset", str(preset), "--out", str(out), "--workers", "1", "--no-progress"]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(inject), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("FIDEC_TEST_ENOSPC_AFTER", "6")  # two checkpoints fit, the third does not
    assert main(command) == 28
    err = capsys.readouterr().err
    assert len(_lines(err)) == 1, err
    assert f"no space left on the device holding {out} (cell full:bc:toy-bimodal-v0, seed" in err
    assert "free space there and run the same command again" in err
    _consistent(out)
    runs = ResultsStore(out).runs()
    assert [r["status"] for r in runs] == ["pending", "pending"]  # resumable, not failed; the grid stopped
    assert runs[0]["last_good_step"] == 20
    assert [s for s, _ in list_checkpoints(next((out / "runs").iterdir()))] == [10, 20]

    monkeypatch.delenv("FIDEC_TEST_ENOSPC_AFTER")  # space freed
    assert main(command) == 0
    store = ResultsStore(out)
    assert [r["status"] for r in store.runs()] == ["done", "done"]
    assert [e["step"] for e in store.evaluations(runs[0]["id"])] == [1, 20, 40]


def test_disk_full_while_registering(tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(ResultsStore, "create_run", full)
    out = tmp_path / "out"
    assert main(["leaderboard", "run", "--preset", str(_preset(tmp_path / "p.yaml")), "--out", str(out)]) == 28
    err = capsys.readouterr().err
    assert len(_lines(err)) == 1 and f"results store in {out} cannot grow: the disk is full" in err


# ------------------------------------------------------------------------------------------------ item 6: two grids
def test_claims_follow_the_holder_liveness(tmp_path):
    store = ResultsStore(tmp_path)
    run = store.create_run(agent="bc", env_id=TOY, seed=0, config={}, data_provenance={}, code_version="x")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with sqlite3.connect(tmp_path / "results.sqlite") as conn:  # a live process on this host holds the run
            start = Path(f"/proc/{sleeper.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
            conn.execute(
                "UPDATE runs SET claim_pid = ?, claim_host = ?, claim_start = ?, claim_heartbeat = '2000-01-01' ",
                (sleeper.pid, os.uname().nodename, start),
            )
        assert store.claim_runs([run])["claim_pid"] == sleeper.pid
    finally:
        sleeper.kill()
        sleeper.wait()
    assert store.claim_runs([run]) is None  # its holder died: taken over
    assert store.get_run(run)["claim_pid"] == os.getpid()
    with sqlite3.connect(tmp_path / "results.sqlite") as conn:  # another host, heartbeat fresh: held
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        conn.execute("UPDATE runs SET claim_pid = 1, claim_host = 'elsewhere', claim_heartbeat = ?", (now,))
    assert store.claim_runs([run])["claim_host"] == "elsewhere"
    with sqlite3.connect(tmp_path / "results.sqlite") as conn:  # ... and stale: taken over
        conn.execute("UPDATE runs SET claim_heartbeat = '2000-01-01T00:00:00+00:00'")
    assert store.claim_runs([run]) is None
    store.release_runs([run])
    assert store.get_run(run)["claim_pid"] is None


def _grid_command(preset: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fidec_gym.cli",
        "leaderboard",
        "run",
        "--preset",
        str(preset),
        "--out",
        str(out),
        "--workers",
        "1",
        "--no-progress",
    ]


def _grid_process(preset: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        _grid_command(preset, out),
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _pause_outside_a_write(pid: int, db: Path) -> None:
    """SIGSTOP ``pid`` at a moment it holds no write lock on ``db``: a writer stopped mid-transaction would block
    every other process's writes."""
    for _ in range(200):
        os.kill(pid, signal.SIGSTOP)
        conn = sqlite3.connect(db, timeout=0.2, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:  # locked: let it finish the write
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.05)
        finally:
            conn.close()
    raise AssertionError(f"process {pid} kept {db} locked")


def test_two_grids_on_one_directory_never_train_a_cell_twice(tmp_path):
    # One cell; its holder is paused while a third process looks, since a tiny cell can finish within that start-up.
    preset = _preset(tmp_path / "shared.yaml", offline_steps=20_000, eval_interval=20_000, checkpoint_interval=500)
    out = tmp_path / "out"
    first, second = _grid_process(preset, out), _grid_process(preset, out)  # at once: they race for the claim
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        runs = ResultsStore(out).runs() if (out / "results.sqlite").exists() else []
        if runs and runs[0]["status"] == "running":
            break
        time.sleep(0.3)
    holder = ResultsStore(out).runs()[0]["claim_pid"]
    # 40 s later in the brief; here: while the cell trains. The third process leaves it to its holder.
    third_env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    _pause_outside_a_write(holder, out / "results.sqlite")  # a stopped process is alive: its claim holds
    try:
        third = subprocess.run(_grid_command(preset, out), capture_output=True, text=True, timeout=120, env=third_env)
    finally:
        os.kill(holder, signal.SIGCONT)
    assert third.returncode == 75, third.stdout + third.stderr
    assert f"skipped: shared:bc:toy-bimodal-v0: being trained by another process: pid {holder} on" in third.stdout
    assert "0 cells finished now" in third.stdout

    outputs = [p.communicate(timeout=240)[0] for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))
    finished = [o for o in outputs if "1 cells finished now" in o]
    assert codes in ([0, 0], [0, 75]) and len(finished) == 1, outputs  # exactly one of them trained the cell
    run = ResultsStore(out).runs()[0]
    assert run["status"] == "done" and run["claim_pid"] is None
    assert [e["step"] for e in ResultsStore(out).evaluations(run["id"])] == [1, 20_000]

    # The advice of the held message: once the holder is done, the same command finishes (nothing left to do).
    again = subprocess.run(third.args, capture_output=True, text=True, timeout=120, env=third_env)
    assert again.returncode == 0 and "0 cells finished now, 1 skipped" in again.stdout, again.stdout + again.stderr
