"""Tables loaded at once by worker processes, a big table in parts: the same target as one
after another, a crash between parts is never recorded as loaded, workers die with the job."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_cli, sql
from independent import compare

sys.path.insert(0, ROOT)
from examples.app.generate_sample import generate  # noqa: E402
from migrate.phases.restore import PART_MIN_ROWS  # noqa: E402


@pytest.fixture(scope="module")
def parts_db(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("parts") / "parts.db")
    generate(path, users=300, datasets=1000, jobs=PART_MIN_ROWS + 20_000)
    return path


def events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_big_table_loads_in_parts_same_target_as_one_worker(parts_db, tmp_path, pgdb, env, server):
    r = run_cli(["run", "--source", parts_db, "--target", pgdb, "--backup-dir", str(tmp_path / "b"),
                 "--workers", "2", "--log-format", "json"], env)
    assert r.returncode == 0, r.stderr[-3000:]
    loaded = {e["table"]: e for e in events(r.stderr) if e["event"] == "table loaded"}
    assert loaded["trainingjob"]["parts"] == 2 and loaded["trainingjob"]["loaded"] == PART_MIN_ROWS + 20_000
    assert "parts" not in loaded["user"]  # small tables load whole
    assert compare(parts_db, pgdb, server.password) == []
    state = dict(sql(server, pgdb, "SELECT table_name, status FROM _migrate.tables"))
    assert set(state.values()) == {"loaded"}
    # one worker builds the same content: restore the same backup into a second database
    other = pgdb + "_one"
    sql(server, pgdb, f'CREATE DATABASE "{other.rsplit("/", 1)[1]}"')
    r1 = run_cli(["restore", "--backup-dir", str(tmp_path / "b"), "--target", other, "--workers", "1",
                  "--log-format", "json"], env)
    assert r1.returncode == 0, r1.stderr[-3000:]
    assert all("parts" not in e for e in events(r1.stderr) if e["event"] == "table loaded")
    assert compare(parts_db, other, server.password) == []
    # and a re-run with workers skips every table
    r2 = run_cli(["run", "--source", parts_db, "--target", pgdb, "--backup-dir", str(tmp_path / "b"),
                  "--log-format", "json"], env)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert sum(e["event"] == "table already loaded by an earlier run; skipped" for e in events(r2.stderr)) == 4


def _ours(marker: str) -> list[int]:
    pids = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    pids.append(int(pid))
        except (OSError, ValueError):
            pass
    return pids


def test_kill_while_parts_load_is_not_recorded_and_workers_die(parts_db, tmp_path, pgdb, env, server):
    backup = str(tmp_path / "killed-backup")
    args = ["run", "--source", parts_db, "--target", pgdb, "--backup-dir", backup, "--workers", "2",
            "--log-format", "json"]
    p = subprocess.Popen([sys.executable, "-m", "migrate", *args], env=env, cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in p.stderr:  # kill the job as soon as the big table's parts are handed out
        if '"loading table"' in line and '"parts"' in line:
            p.send_signal(signal.SIGKILL)
            break
    p.wait()
    deadline = time.time() + 10
    while _ours(backup) and time.time() < deadline:
        time.sleep(0.1)
    assert _ours(backup) == [], "worker processes outlived the killed job"
    state = dict(sql(server, pgdb, "SELECT table_name, status FROM _migrate.tables"))
    assert state["trainingjob"] == "loading"  # truncated, parts maybe in: never taken for loaded
    r = run_cli(args, env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert compare(parts_db, pgdb, server.password) == []


def test_workers_must_be_positive(cli, tmp_path):
    r = cli("run", "--source", str(tmp_path / "x.db"), "--target", "postgresql://u@127.0.0.1:1/db",
            "--backup-dir", str(tmp_path / "b"), "--workers", "0")
    assert r.returncode == 2
    assert "workers: 0 is not a number of processes (1 or more)" in r.stderr
