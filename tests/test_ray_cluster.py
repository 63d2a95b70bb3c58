"""A grid on a real Ray cluster (``ray start --head`` on loopback): one Ray worker is killed mid-cell, and the grid
still completes (Ray runs the task once more; it takes over the dead worker's claim and resumes from the last
checkpoint, or, failing that, a second invocation with --retry-failed reruns it), with every cell's rows once."""

import datetime
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from fidec_gym.eval.store import ResultsStore

pytest.importorskip("ray", reason="ray is not installed (pip install 'fidec-gym[ray]')")
if shutil.which("ray") is None:
    pytest.skip("the `ray` command is not on PATH", allow_module_level=True)

TOY, SADDLE = "fidec/toy-bimodal-v0", "fidec/toy-saddle-v0"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_grid_survives_a_killed_ray_worker(tmp_path):
    port = _free_port()
    # A short temp dir: Ray's unix sockets live there and their paths must stay under 108 characters.
    ray_tmp = tempfile.mkdtemp(prefix="fr", dir="/tmp")
    # Ray >= 2.59 turns token authentication on for `ray start`; the cluster and this client share a test token
    # (so nothing is written to ~/.ray).
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    preset = tmp_path / "ray.yaml"
    preset.write_text(
        yaml.safe_dump(
            {
                "name": "ray",
                "agents": ["bc"],
                "tasks": [TOY, SADDLE],
                "offline_steps": 400,
                "eval_interval": 200,
                "eval_episodes": 4,
                "eval_workers": 1,
                "log_interval": 100,
                "checkpoint_interval": 10,
                "agent_overrides": {"all": {"batch_size": 16, "actor_hidden_dims": [16, 16]}},
            }
        )
    )
    out = tmp_path / "out"
    command = [sys.executable, "-m", "fidec_gym.cli", "leaderboard", "run", "--preset", str(preset), "--out",
               str(out), "--backend", "ray", "--ray-address", f"127.0.0.1:{port}", "--no-progress"]  # fmt: skip
    start = ["ray", "start", "--head", "--num-cpus", "2", "--port", str(port), "--node-ip-address", "127.0.0.1",
             "--include-dashboard=false", "--temp-dir", ray_tmp, "--disable-usage-stats"]  # fmt: skip
    head = None
    try:
        # Its own session, so that the daemons it leaves running can be found (and stopped) precisely.
        head = subprocess.Popen(
            start, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert head.wait(60) == 0, head.stdout.read().decode()[-3000:]
        grid = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        victim = None
        deadline = time.monotonic() + 90
        while victim is None and time.monotonic() < deadline and grid.poll() is None:
            time.sleep(0.2)
            if not (out / "results.sqlite").exists():
                continue
            for run in ResultsStore(out).runs():
                if run["status"] == "running" and (run["last_good_step"] or 0) >= 20 and run["claim_pid"]:
                    victim = run
                    break
        assert victim is not None, grid.communicate()[0][-3000:]
        title = Path(f"/proc/{victim['claim_pid']}/cmdline").read_bytes().split(b"\0")[0].decode()
        assert title.startswith("ray::"), title  # the Ray worker executing the cell's task
        killed_at = time.time()
        os.kill(victim["claim_pid"], signal.SIGKILL)

        output = grid.communicate(timeout=120)[0]
        print(f"grid exit {grid.returncode}:\n{output[-1500:]}")
        if grid.returncode != 0:  # Ray gave up on the task: the cell is reported, and a second invocation reruns it
            assert "failed: " in output and "worker crashed" in output, output[-3000:]
            again = subprocess.run([*command, "--retry-failed"], env=env, capture_output=True, text=True, timeout=120)
            assert again.returncode == 0, again.stdout + again.stderr
        else:
            assert "2 cells finished now" in output, output[-3000:]  # Ray ran the task again

        store = ResultsStore(out)
        runs = store.runs()
        assert sorted(r["env_id"] for r in runs) == [TOY, SADDLE] and {r["status"] for r in runs} == {"done"}
        for run in runs:  # no duplicated rows
            assert [e["step"] for e in store.evaluations(run["id"])] == [1, 200, 400]
            checkpoints = [a["step"] for a in store.artefacts(run["id"], kind="checkpoint")]
            assert len(checkpoints) == len(set(checkpoints))
        # The killed cell resumed from its checkpoint rather than starting over: its first evaluation is older.
        first = store.evaluations(victim["id"])[0]
        assert datetime.datetime.fromisoformat(first["created"]).timestamp() < killed_at
    finally:
        _stop_cluster(head)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _session(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3]) == sid:
                pids.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return pids


def _stop_cluster(head) -> None:
    """Stop this test's cluster, and only it: every process of the session `ray start` ran in (the head's daemons
    and their workers). `ray stop --force` would also kill any other Ray instance on the machine, such as another
    test's."""
    if head is None:
        return
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        for pid in _session(head.pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while _session(head.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
