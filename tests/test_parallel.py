"""Tables loaded at once by worker processes, a big table in parts: the same target as one
after another, a crash between parts is never recorded as loaded, workers die with the job."""
import gzip
import json
import os
import signal
import sqlite3
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
    # loaded from the spill files of this run's backup, which are gone once the load is done
    assert sorted(os.listdir(tmp_path / "b" / "tables")) == [
        "0001-user.jsonl", "0002-dataset.jsonl", "0003-trainingjob.jsonl", "0004-modelartifact.jsonl"]
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


def _signal_when_parts_load(args: list[str], env: dict, sig: int) -> subprocess.Popen:
    """Start the job; send it sig as soon as the big table's parts are handed out."""
    p = subprocess.Popen([sys.executable, "-m", "migrate", *args], env=env, cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if '"loading table"' in line and '"parts"' in line:
            p.send_signal(sig)
            break
    return p


def test_kill_while_parts_load_is_not_recorded_and_workers_die(parts_db, tmp_path, pgdb, env, server):
    backup = str(tmp_path / "killed-backup")
    args = ["run", "--source", parts_db, "--target", pgdb, "--backup-dir", backup, "--workers", "2",
            "--log-format", "json"]
    p = _signal_when_parts_load(args, env, signal.SIGKILL)
    p.communicate()
    deadline = time.time() + 10
    while _ours(backup) and time.time() < deadline:
        time.sleep(0.1)
    assert _ours(backup) == [], "worker processes outlived the killed job"
    state = dict(sql(server, pgdb, "SELECT table_name, status FROM _migrate.tables"))
    assert state["trainingjob"] == "loading"  # truncated, parts maybe in: never taken for loaded
    r = run_cli(args, env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert compare(parts_db, pgdb, server.password) == []


def test_sigterm_while_parts_load_exits_130_at_once_and_the_rerun_converges(parts_db, tmp_path, pgdb, env, server):
    """What a pod gets when it is stopped: the workers are stopped, the job exits 130."""
    backup = str(tmp_path / "b")
    args = ["run", "--source", parts_db, "--target", pgdb, "--backup-dir", backup, "--workers", "2",
            "--log-format", "json"]
    p = _signal_when_parts_load(args, env, signal.SIGTERM)
    rest = p.communicate(timeout=30)[1]
    assert p.returncode == 130, rest[-3000:]
    assert "interrupted" in rest and _ours(backup) == []
    r = run_cli(args, env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert compare(parts_db, pgdb, server.password) == []


FLOOD = """
import sys, time
sys.path.insert(0, {root!r})
from migrate import workers
from migrate.progress import current

def work(k):
    end = time.monotonic() + (0 if k == 0 else 60)
    while time.monotonic() < end:
        current().advance(1)  # the worker reports progress without pause
    return k

def done(item, outcome, failed):
    raise RuntimeError("the parent fails while a worker runs")

try:
    workers.run(2, work, [(0,), (1,)], done)
except RuntimeError:
    print("raised")
"""


def test_a_failing_parent_stops_its_workers_without_waiting_on_their_progress_queue():
    """The parent fails (a file that does not match its manifest, SIGTERM) while a worker is
    writing progress: the worker is killed, maybe holding the queue's lock. The parent used
    to wait for that lock for ever (4 runs in 5 here); now it raises at once."""
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", FLOOD.format(root=ROOT)], capture_output=True, text=True,
                           timeout=45)
        assert r.stdout.strip() == "raised", r.stderr[-2000:]


def test_a_corrupt_backup_file_loaded_in_parts_is_never_recorded(parts_db, tmp_path, pgdb, env, server):
    """Each part is committed on its own: the file's SHA-256, checked once every part is in,
    keeps the table from being taken as loaded (exit 10); a sound backup loads it next time."""
    backup = tmp_path / "b"
    assert run_cli(["backup", "--source", parts_db, "--backup-dir", str(backup)], env).returncode == 0
    f = backup / "tables" / "0003-trainingjob.jsonl"
    good = f.read_bytes()
    middle = good.index(b'"running"', len(good) // 2)
    f.write_bytes(good[:middle] + b'"runnin9"' + good[middle + 9:])  # still valid JSON, same length
    args = ["restore", "--backup-dir", str(backup), "--target", pgdb, "--workers", "2", "--log-format", "json"]
    r = run_cli(args, env)
    assert r.returncode == 10, r.stderr[-3000:]
    assert "does not match its manifest" in r.stderr and "0003-trainingjob.jsonl" in r.stderr
    assert dict(sql(server, pgdb, "SELECT table_name, status FROM _migrate.tables"))["trainingjob"] == "loading"
    f.write_bytes(good)
    r = run_cli(args, env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert compare(parts_db, pgdb, server.password) == []


def test_a_backup_of_an_earlier_format_is_refused_with_what_to_do(parts_db, tmp_path, pgdb, env):
    backup = tmp_path / "b"
    assert run_cli(["backup", "--source", parts_db, "--backup-dir", str(backup)], env).returncode == 0
    manifest = json.loads((backup / "manifest.json").read_text())
    (backup / "manifest.json").write_text(json.dumps({**manifest, "format": 1}))
    r = run_cli(["restore", "--backup-dir", str(backup), "--target", pgdb], env)
    assert r.returncode == 10
    assert "manifest format 1, this version reads 2" in r.stderr and "write the backup again" in r.stderr


def test_workers_must_be_positive(cli, tmp_path):
    r = cli("run", "--source", str(tmp_path / "x.db"), "--target", "postgresql://u@127.0.0.1:1/db",
            "--backup-dir", str(tmp_path / "b"), "--workers", "0")
    assert r.returncode == 2
    assert "workers: 0 is not a number of processes (1 or more)" in r.stderr


TRICKY = """
CREATE TABLE t (id INTEGER PRIMARY KEY, d DATE, x TEXT, v REAL, b BLOB);
CREATE TABLE nokey (a, b);
"""


def _backup(src: str, out: str, workers: int, **options):
    """The backup phase on its own: source read and decided, written with these workers."""
    from migrate.phases import backup as backup_phase
    from migrate.sqlite_source import SourceDB
    with SourceDB(src) as db:
        schema = db.read_schema(workers=workers)
        schema.decide({})
        backup_phase.run(src, out, schema, db, workers=workers, **options)
    return schema


def test_backup_in_pieces_is_the_same_backup(make_sqlite, tmp_path, monkeypatch):
    """Rowid ranges written by several workers join into the very files, checksums, error
    samples and census one process writes: invalid UTF-8 (read again marked) in one piece,
    conversion errors (an ambiguous date) in several, a table without a key kept whole."""
    from migrate import sqlite_source
    rows = [(i, 5 if i % 17 == 0 else "2024-01-02", "x\x00y" if i % 11 == 0 else f"t{i}\n",
             float("inf") if i % 13 == 0 else i / 7, bytes([i % 256]) * 3) for i in range(1, 200)]
    src = make_sqlite(TRICKY, params=[("INSERT INTO t VALUES (?, ?, ?, ?, ?)", rows),
                                      ("INSERT INTO nokey VALUES (?, ?)", [(i, str(i)) for i in range(50)])])
    conn = sqlite3.connect(src)
    conn.execute("UPDATE t SET x = CAST(x'41ff42' AS TEXT) WHERE id = 150")  # not UTF-8
    conn.commit()
    conn.close()
    monkeypatch.setattr(sqlite_source, "SPLIT_MIN_ROWS", 8)
    out = {}
    for workers in (1, 3):
        schema = _backup(src, str(tmp_path / f"w{workers}"), workers, spill=True)
        files = {}
        for name in sorted(os.listdir(tmp_path / f"w{workers}" / "tables")):
            with open(tmp_path / f"w{workers}" / "tables" / name, "rb") as f:
                files[name] = f.read()
        manifest = json.loads((tmp_path / f"w{workers}" / "manifest.json").read_text())
        out[workers] = files, manifest["tables"], [t.spill is not None for t in schema.tables]
    assert out[1] == out[3]
    files, tables, spilled = out[3]
    assert list(files) == ["0001-t.jsonl", "0002-nokey.jsonl", "0002-nokey.jsonl.copy"]
    assert spilled == [False, True]  # a table with conversion errors is loaded from its JSON
    t = tables[0]
    # rows with an error: 11 ambiguous dates + 18 NULs - 1 row with both (187) + 1 invalid UTF-8
    assert t["conversion_errors"] == 29
    keys = [e["key"]["id"] for e in t["error_samples"]]
    assert len(keys) == 20 and keys == sorted(keys) and keys[:3] == [11, 17, 22]  # a sample, in key order
    assert [c["census"]["invalid_utf8"] for c in t["columns"]] == [0, 0, 1, 0, 0]
    # gzip pieces join into one valid gzip file (of several members) with the same content
    _backup(src, str(tmp_path / "gz"), 3, compress="gzip")
    with gzip.open(tmp_path / "gz" / "tables" / "0001-t.jsonl.gz") as f:
        assert f.read() == files["0001-t.jsonl"]


def test_backup_in_pieces_of_a_table_whose_columns_take_the_rowid_names(make_sqlite, tmp_path, monkeypatch):
    """Columns named rowid and oid: the pieces are cut at the rowid itself (_rowid_), so
    every row is written once, in key order, as one process writes them."""
    from migrate import sqlite_source
    from migrate.sqlite_source import SourceDB
    src = make_sqlite("CREATE TABLE s (id INTEGER PRIMARY KEY, rowid TEXT, oid INTEGER);",
                      params=[("INSERT INTO s VALUES (?, ?, ?)", [(i, f"r{999 - i}", -i) for i in range(1, 300)])])
    monkeypatch.setattr(sqlite_source, "SPLIT_MIN_ROWS", 8)
    out = {}
    with SourceDB(src) as db:
        assert len(db.ranges(db.read_schema().tables[0], 3)) == 3
    for workers in (1, 3):
        _backup(src, str(tmp_path / f"w{workers}"), workers)
        with open(tmp_path / f"w{workers}" / "tables" / "0001-s.jsonl", "rb") as f:
            out[workers] = [json.loads(line) for line in f]
    assert out[1] == out[3] == [[i, f"r{999 - i}", -i] for i in range(1, 300)]
