"""ResultsStore: round trips, idempotent run creation, concurrent writers, schema and permission errors."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import sqlite3
import tempfile

import numpy as np
import pytest

from fidec_gym.eval.store import DB_FILENAME, ResultsStore, SchemaError

RUN_KEY = dict(agent="fidec", env_id="fidec/toy-bimodal-v0", seed=3)


def _new_run(store: ResultsStore, **overrides) -> int:
    fields = dict(
        RUN_KEY,
        config={"alpha": 10.0, "dims": [64, 64]},
        data_provenance={"provenance": "synthetic"},
        code_version="0.1.0",
    )
    fields.update(overrides)
    return store.create_run(**fields)


def test_run_round_trip(tmp_path):
    store = ResultsStore(tmp_path)
    assert (tmp_path / DB_FILENAME).exists()
    assert store.schema_version == ResultsStore.SCHEMA_VERSION
    run_id = _new_run(store, cell="toy", preset="smoke")
    run = store.find_run(**RUN_KEY, cell="toy")
    assert run["id"] == run_id and run["status"] == "pending" and run["preset"] == "smoke"
    assert run["config"] == {"alpha": 10.0, "dims": [64, 64]}
    assert run["data_provenance"] == {"provenance": "synthetic"}
    assert store.find_run(**RUN_KEY) is None  # cell is part of the key

    # Same key and config: the existing run; a different config is refused with the differing key named.
    assert _new_run(store, cell="toy", preset="smoke") == run_id
    with pytest.raises(ValueError, match="alpha"):
        _new_run(store, cell="toy", config={"alpha": 1.0, "dims": [64, 64]})

    store.set_status(run_id, "running")
    store.set_status(run_id, "failed", message="non-finite loss", last_good_step=2000)
    store.set_summary(run_id, {"score": np.float32(42.5), "score_rule": "last evaluation", "steps": [1, 2]})
    run = store.runs(status="failed")[0]
    assert run["message"] == "non-finite loss" and run["last_good_step"] == 2000
    assert run["summary"] == {"score": 42.5, "score_rule": "last evaluation", "steps": [1, 2]}
    assert store.runs(agent=["bc", "fidec"], status="failed")[0]["id"] == run_id
    assert store.runs(agent="bc") == []
    with pytest.raises(ValueError, match="valid"):
        store.set_status(run_id, "finished")
    with pytest.raises(ValueError, match="unknown run filter"):
        store.runs(colour="red")
    with pytest.raises(KeyError, match="no run with id"):
        store.set_status(999, "done")


def test_evaluations_artefacts_and_extra_tables(tmp_path):
    store = ResultsStore(tmp_path)
    run_id = _new_run(store)
    store.add_evaluation(run_id, 100, {"success": np.float64(0.5), "return": -10.0})
    store.add_evaluation(run_id, 1, {"success": 0.0})
    store.add_evaluation(run_id, 100, {"success": 0.75})  # upsert on (run, step)
    evaluations = store.evaluations(run_id)
    assert [e["step"] for e in evaluations] == [1, 100]
    assert evaluations[1]["metrics"] == {"success": 0.75}
    store.delete_evaluations_after(run_id, 1)
    assert [e["step"] for e in store.evaluations()] == [1]

    store.add_artefact(run_id, "checkpoint", "runs/x/checkpoint.msgpack", step=100)
    store.add_artefact(run_id, "checkpoint", "runs/x/checkpoint.msgpack", step=200)  # same file, new step
    store.add_artefact(run_id, "video", "runs/x/videos/a.mp4", step=200)
    assert [(a["kind"], a["step"]) for a in store.artefacts(run_id)] == [("checkpoint", 200), ("video", 200)]
    assert len(store.artefacts(kind="video")) == 1
    with pytest.raises(ValueError, match="artefact kind"):
        store.add_artefact(run_id, "movie", "a.mp4")

    assert store.rows("toy_metrics") == []
    store.add_rows("toy_metrics", [{"run_id": run_id, "SF1": 0.99, "method": "fidec"}])
    store.add_rows("toy_metrics", [{"run_id": run_id, "SF1": np.float32(0.5), "NI": 0.25}])  # new column
    assert store.rows("toy_metrics") == [
        {"run_id": run_id, "SF1": 0.99, "method": "fidec", "NI": None},
        {"run_id": run_id, "SF1": 0.5, "method": None, "NI": 0.25},
    ]
    assert store.tables() == ["toy_metrics"]
    for bad in ("runs", "1abc", "x; DROP TABLE runs"):
        with pytest.raises(ValueError, match="table name"):
            store.add_rows(bad, [{"a": 1}])
    with pytest.raises(ValueError, match="json.dumps"):
        store.add_rows("toy_metrics", [{"SF1": [1, 2]}])

    store.reset_run(run_id)
    assert store.evaluations(run_id) == [] and store.artefacts(run_id) == []
    assert store.get_run(run_id)["status"] == "pending"


def _writer(path: str, worker: int, count: int) -> None:
    store = ResultsStore(path)
    run_id = store.create_run(
        agent="bc", env_id="fidec/toy-saddle-v0", seed=worker, config={}, data_provenance={}, code_version="test"
    )
    shared = store.create_run(
        agent="bc", env_id="fidec/toy-saddle-v0", seed=100, config={}, data_provenance={}, code_version="test"
    )
    for step in range(count):
        store.add_evaluation(run_id, step, {"value": float(step)})
        store.add_rows("events", [{"worker": worker, "step": step}])
        store.add_evaluation(shared, worker * count + step, {"worker": float(worker)})


def test_concurrent_writers_lose_nothing(tmp_path):
    workers, count = 4, 25
    context = mp.get_context("spawn")
    processes = [context.Process(target=_writer, args=(str(tmp_path), w, count)) for w in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    store = ResultsStore(tmp_path)
    assert len(store.runs()) == workers + 1  # the shared run was created once, not once per worker
    assert len(store.evaluations()) == 2 * workers * count
    shared = store.find_run(agent="bc", env_id="fidec/toy-saddle-v0", seed=100)
    assert [e["step"] for e in store.evaluations(shared["id"])] == list(range(workers * count))
    events = store.rows("events")
    assert sorted((e["worker"], e["step"]) for e in events) == [(w, s) for w in range(workers) for s in range(count)]


def test_store_pickles_for_process_pools(tmp_path):
    store = ResultsStore(tmp_path)
    run_id = _new_run(store)
    clone = pickle.loads(pickle.dumps(store))
    clone.set_status(run_id, "done")
    assert store.get_run(run_id)["status"] == "done"


def test_newer_schema_is_refused(tmp_path):
    ResultsStore(tmp_path).close()
    with sqlite3.connect(tmp_path / DB_FILENAME) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(SchemaError, match="version 99.*upgrade fidec-gym"):
        ResultsStore(tmp_path)
    # The command line treats it as bad input (printed without a traceback).
    assert issubclass(SchemaError, ValueError)


def test_corrupt_database_is_reported(tmp_path):
    (tmp_path / DB_FILENAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SchemaError, match="not a"):
        ResultsStore(tmp_path)


def _open_as_unprivileged(path: str, queue) -> None:
    if os.geteuid() == 0:  # root ignores permission bits; act as the unprivileged user 'nobody'
        os.setegid(65534)
        os.seteuid(65534)
    try:
        ResultsStore(path)
        queue.put("opened")
    except PermissionError as error:
        queue.put(f"PermissionError: {error}")


def test_read_only_directory_is_a_clear_error():
    root = tempfile.mkdtemp(prefix="fidec-ro-")
    os.chmod(root, 0o555)
    context = mp.get_context("spawn")  # never fork a process that runs JAX's threads
    queue = context.Queue()
    process = context.Process(target=_open_as_unprivileged, args=(os.path.join(root, "results"), queue))
    process.start()
    process.join(30)
    message = queue.get(timeout=5)
    assert message.startswith("PermissionError") and "--out" in message, message
    assert not os.path.exists(os.path.join(root, "results"))
    os.rmdir(root)


class _InterruptBeforeCommit:
    """A connection whose first COMMIT is interrupted before it runs, as a SIGTERM between two bytecodes may be."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn, self.interrupted = conn, False

    def execute(self, sql, *args):
        if sql == "COMMIT" and not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
        return self.conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.conn, name)


def test_an_interrupted_write_leaves_the_store_writable(tmp_path):
    # A worker stopped mid-write must still mark its run resumable with the next write on the same connection.
    store = ResultsStore(tmp_path)
    run_id = _new_run(store)
    store.set_status(run_id, "running", last_good_step=90)

    real = store._connection()
    store._conn = _InterruptBeforeCommit(real)
    with pytest.raises(KeyboardInterrupt):
        store.set_status(run_id, "running", last_good_step=100)
    assert not real.in_transaction  # rolled back, not left open
    store.set_status(run_id, "pending", message="interrupted")
    assert ResultsStore(tmp_path).get_run(run_id)["status"] == "pending"

    # An interrupt right after BEGIN, before the block that would roll it back, leaves a transaction open.
    store._conn = real
    real.execute("BEGIN IMMEDIATE")
    store.set_status(run_id, "running", last_good_step=110)
    run = ResultsStore(tmp_path).get_run(run_id)
    assert run["status"] == "running" and run["last_good_step"] == 110
