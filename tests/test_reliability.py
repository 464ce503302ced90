"""Safe to re-run: kill -9 at random moments, a server restart mid-load, two runs at once,
hostile files and targets. Real processes, a real server."""
import hashlib
import os
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import ROOT, Cluster, pg_connect, run_cli
from independent import compare

sys.path.insert(0, ROOT)
from examples.app.generate_sample import generate  # noqa: E402


@pytest.fixture(scope="module")
def big_db(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("big") / "big.db")
    generate(path, users=500, datasets=2000, jobs=120_000)
    return path


def _popen(args, env):
    return subprocess.Popen([sys.executable, "-m", "migrate", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_kill_9_at_random_moments_then_rerun_converges(big_db, tmp_path, pgdb, env, server):
    src = str(tmp_path / "src.db")
    shutil.copy(big_db, src)
    before = sha(src)
    args = ["run", "--source", src, "--target", pgdb, "--backup-dir", str(tmp_path / "b")]
    rng = random.Random(20261123)
    for _ in range(6):
        p = _popen(args, env)
        time.sleep(rng.uniform(0.3, 4.0))
        p.send_signal(signal.SIGKILL)
        p.communicate()
    r = run_cli(args, env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert compare(src, pgdb, server.password) == []
    assert sha(src) == before and not os.path.exists(src + "-wal") and not os.path.exists(src + "-journal")


def test_server_restart_mid_load_retries_the_table(big_db, tmp_path, env):
    base = tempfile.mkdtemp(prefix="migrate-restart-")
    cluster = Cluster(base).start()
    try:
        conn = cluster_connect(cluster)
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE app")
        conn.close()
        url = cluster.url.rsplit("/", 1)[0] + "/app"
        e = {**env, "MIGRATE_TARGET_PASSWORD": cluster.password}
        p = _popen(["run", "--source", big_db, "--target", url, "--backup-dir", str(tmp_path / "b"),
                    "--log-format", "json"], e)
        deadline = time.time() + 120
        log = []
        for line in p.stderr:  # restart the server once the big table is being loaded
            log.append(line)
            if '"loading table"' in line and '"trainingjob"' in line:
                cluster.restart()
                break
            assert time.time() < deadline
        out, err = p.communicate(timeout=300)
        log.append(err)
        text = "".join(log)
        assert p.returncode == 0, text[-3000:]
        assert "retrying loading table 'trainingjob'" in text
        assert compare(big_db, url, cluster.password) == []
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def cluster_connect(cluster):
    import psycopg2
    return psycopg2.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                            dbname="postgres")


def test_two_runs_at_once_one_waits_for_the_other(big_db, tmp_path, pgdb, env, server):
    a = _popen(["run", "--source", big_db, "--target", pgdb, "--backup-dir", str(tmp_path / "a")], env)
    time.sleep(0.5)
    b = _popen(["run", "--source", big_db, "--target", pgdb, "--backup-dir", str(tmp_path / "b"),
                "--lock-timeout", "300"], env)
    out_a, err_a = a.communicate(timeout=300)
    out_b, err_b = b.communicate(timeout=300)
    assert a.returncode == 0, err_a[-2000:]
    assert b.returncode == 0, err_b[-2000:]
    assert "another migration holds the lock; waiting" in err_b
    assert "already loaded by an earlier run; skipped" in err_b
    assert compare(big_db, pgdb, server.password) == []


def test_second_run_gives_up_on_the_lock_with_exit_8(big_db, tmp_path, pgdb, env):
    conn = pg_connect_url(env, pgdb)
    cur = conn.cursor()
    cur.execute("SELECT pg_advisory_lock(%s, hashtext('migrate:public'))", (0x6D696772,))
    r = run_cli(["run", "--source", big_db, "--target", pgdb, "--backup-dir", str(tmp_path / "b"),
                 "--lock-timeout", "1"], env)
    assert r.returncode == 8
    assert "still holds the lock after 1 s" in r.stderr
    conn.close()  # a dead holder leaves nothing behind: the next run gets the lock at once
    r = run_cli(["init-schema", "--source", big_db, "--target", pgdb, "--lock-timeout", "5"], env)
    assert r.returncode == 0, r.stderr


def pg_connect_url(env, url):
    import psycopg2
    import sqlalchemy as sa
    u = sa.engine.make_url(url)
    return psycopg2.connect(host=u.host, port=u.port, user=u.username, dbname=u.database,
                            password=env["MIGRATE_TARGET_PASSWORD"])


def test_locked_source_fails_clearly_after_timeout(tmp_path, cli):
    src = str(tmp_path / "locked.db")
    c = sqlite3.connect(src, isolation_level=None)
    c.execute("CREATE TABLE t (x)")
    c.execute("BEGIN EXCLUSIVE")
    c.execute("INSERT INTO t VALUES (1)")
    r = cli("plan", "--source", src, "--source-timeout", "1")
    assert r.returncode == 3
    assert "database is locked by another process (waited 1 s)" in r.stderr
    c.execute("ROLLBACK")
    c.close()


def test_disk_full_while_writing_backup_leaves_no_manifest(big_db, tmp_path, env):
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))
    r = subprocess.run([sys.executable, "-m", "migrate", "backup", "--source", big_db, "--backup-dir",
                        str(tmp_path / "b")], env=env, cwd=ROOT, capture_output=True, text=True,
                       preexec_fn=limit)
    assert r.returncode == 10, r.stderr[-2000:]
    assert "disk full" in r.stderr and "has no manifest" in r.stderr
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_unreadable_source_permission_denied(tmp_path, env):
    d = tempfile.mkdtemp(prefix="migrate-perm-")
    os.chmod(d, 0o755)
    src = os.path.join(d, "secret.db")
    sqlite3.connect(src).execute("CREATE TABLE t (x)").connection.commit()
    os.chmod(src, 0o000)
    # as root every file is readable: the CLI drops to 'nobody' after importing itself
    drop = "os.setgid(65534); os.setuid(65534); " if os.geteuid() == 0 else ""
    code = ("import os, sys, migrate.cli, migrate.pipeline, migrate.plan; " + drop +
            "sys.exit(migrate.cli.main(['plan', '--source', sys.argv[1]]))")
    r = subprocess.run([sys.executable, "-c", code, str(src)], env=env, cwd=ROOT, capture_output=True, text=True)
    shutil.rmtree(d)
    assert r.returncode == 3, r.stderr
    assert "permission denied (not readable by uid" in r.stderr


def test_no_privileges_on_target_exit_4(make_sqlite, tmp_path, pgdb, server, cli):
    conn = pg_connect(server, pgdb)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("DROP ROLE IF EXISTS weak")
    cur.execute("CREATE ROLE weak LOGIN PASSWORD 'weak-pw'")
    cur.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    conn.close()
    src = make_sqlite("CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);")
    url = pgdb.replace("postgres@", "weak@")
    r = cli("run", "--source", src, "--target", url, "--backup-dir", str(tmp_path / "b"),
            extra_env={"MIGRATE_TARGET_PASSWORD": "weak-pw"})
    assert r.returncode == 4, r.stderr
    assert "no privileges: permission denied" in r.stderr
    assert "weak-pw" not in r.stderr + r.stdout


def test_corrupt_page_in_the_middle_exit_3(tmp_path, cli, big_db):
    src = str(tmp_path / "corrupt.db")
    shutil.copy(big_db, src)
    size = os.path.getsize(src)
    with open(src, "r+b") as f:  # overwrite a few pages in the middle with garbage
        f.seek((size // 2) // 4096 * 4096)
        f.write(bytes(range(256)) * 64)
    r = cli("run", "--source", src, "--target", "postgresql://u@127.0.0.1:1/db", "--backup-dir",
            str(tmp_path / "b"), "--wait-timeout", "1")
    # either the census or the backup meets the damaged page: exit 3 names the file and the table
    assert r.returncode in (3, 4), r.stderr[-2000:]
    r = cli("backup", "--source", src, "--backup-dir", str(tmp_path / "b"))
    assert r.returncode == 3, r.stderr[-2000:]
    assert "corrupt or not a SQLite database" in r.stderr and f"source '{src}'" in r.stderr
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_consistent_snapshot_while_an_app_writes(tmp_path, env, pgdb, server):
    """A writer keeps committing into a WAL database during the whole run: the migration
    is one snapshot (verify passes against the backup taken from it)."""
    src = str(tmp_path / "live.db")
    w = sqlite3.connect(src)
    w.execute("PRAGMA journal_mode=WAL")
    w.execute("CREATE TABLE event (id INTEGER PRIMARY KEY, v TEXT)")
    w.executemany("INSERT INTO event (v) VALUES (?)", [("x" * 50,)] * 200_000)
    w.commit()
    p = _popen(["run", "--source", src, "--target", pgdb, "--backup-dir", str(tmp_path / "b")], env)
    written = 0
    while p.poll() is None:
        w.executemany("INSERT INTO event (v) VALUES (?)", [("late",)] * 100)
        w.commit()
        written += 100
        time.sleep(0.01)
    out, err = p.communicate()
    assert p.returncode == 0, err[-2000:]
    assert written > 0
    conn = pg_connect(server, pgdb)
    cur = conn.cursor()
    cur.execute("SELECT count(*), max(id) FROM event")
    n, mx = cur.fetchone()
    conn.close()
    assert n == mx and 200_000 <= n < 200_000 + written  # a prefix of the writes: one consistent moment
    w.close()


def test_tls_settings_pass_through_to_libpq(make_sqlite, cli, pgdb, tmp_path):
    src = make_sqlite("CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);")
    r = cli("run", "--source", src, "--target", pgdb + "?sslmode=require", "--backup-dir", str(tmp_path / "b"),
            "--wait-timeout", "1")
    assert r.returncode == 4
    assert "server does not support SSL" in r.stderr  # libpq saw sslmode=require (the test server has no TLS)
    r = cli("run", "--source", src, "--target", pgdb + "?sslmode=disable", "--backup-dir", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr[-2000:]


def test_a_filtered_rerun_that_must_reload_a_parent_of_a_left_out_table_is_refused_untouched(make_sqlite, cli, pgdb,
                                                                                              server, tmp_path):
    def source(name, label):
        return make_sqlite("CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT);"
                           "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id));",
                           name=name, params=[("INSERT INTO parent VALUES (?, ?)", [(i, f"{label}{i}") for i in range(1, 6)]),
                                              ("INSERT INTO child VALUES (?, ?)", [(i, i) for i in range(1, 6)])])
    r = cli("run", "--source", source("a.db", "a"), "--target", pgdb, "--backup-dir", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    # the parent changed; its child's key (from the whole run) points at it and this run leaves the child out
    r = cli("run", "--source", source("b.db", "b"), "--target", pgdb, "--backup-dir", str(tmp_path / "b"),
            "--table", "parent")
    assert r.returncode == 7, r.stdout + r.stderr
    assert ("error: table 'parent' must be reloaded, but a foreign key of a table this run leaves out points at it "
            '(Table "child" references "parent".); nothing of it was changed') in r.stderr
    conn = pg_connect(server, pgdb)
    with conn.cursor() as cur:
        cur.execute("SELECT name FROM parent WHERE id = 1")
        assert cur.fetchone() == ("a1",)
        cur.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated")
        assert cur.fetchone() == (1,)
    conn.close()
