"""One migration split across pods (run --shares N --share-index I --run-id R): each
share migrates its tables, the last to finish adds the foreign keys between shares."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from conftest import ROOT, run_cli, sql
from migrate.errors import LockedError
from migrate.postgres_target import Target
from migrate.schema import Table
from migrate.shares import split

SAMPLE = os.path.join(ROOT, "examples", "app", "sample.db")
PW = "adm1n-Secret-for-shares"


def _fk_rows(server, url):
    return sql(server, url, "SELECT conrelid::regclass::text, conname, convalidated FROM pg_constraint "
                            "WHERE contype = 'f' ORDER BY 1, 2")


def _shares(source, url, backup, run_id, n=2, extra=()):
    return [["run", "--source", source, "--target", url, "--backup-dir", backup, "--shares", str(n),
             "--share-index", str(i), "--run-id", run_id, *extra] for i in range(n)]


def _at_once(commands, env):
    """Every command started before any is waited for (pods of an Indexed Job)."""
    procs = [subprocess.Popen([sys.executable, "-m", "migrate", *c], env=env, cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in commands]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10**7), min_size=0, max_size=30), st.integers(1, 8), st.randoms())
def test_split_gives_every_table_one_share_the_same_in_every_order_and_balanced(rows, n, rnd):
    tables = [Table(name=f"t{i}", columns=[], rows=r) for i, r in enumerate(rows)]
    of = split(tables, n)
    shuffled = list(tables)
    rnd.shuffle(shuffled)
    assert split(shuffled, n) == of  # every pod computes the same split, whatever order it read
    assert sorted(of) == sorted(t.name for t in tables) and set(of.values()) <= set(range(n))
    load = [sum(max(t.rows, 1) for t in tables if of[t.name] == k) for k in range(n)]
    if tables:  # greedy, biggest first: no share above the average by more than one table
        assert max(load) <= sum(load) / n + max(max(t.rows, 1) for t in tables)
        assert of[sorted(tables, key=lambda t: (-t.rows, t.name))[0].name] == 0


def test_two_shares_at_once_migrate_everything_and_the_last_adds_the_keys_between_them(env, pgdb, server, tmp_path):
    env = {**env, "MIGRATE_ADMIN_PASSWORD": PW, "MIGRATE_LOG_FORMAT": "json"}
    backup = str(tmp_path / "backup")
    first = _at_once(_shares(SAMPLE, pgdb, backup, "job-1", extra=["--seed-admin", "--report",
                                                                   str(tmp_path / "report.json")]), env)
    assert [r.returncode for r in first] == [0, 0], [r.stderr[-2000:] for r in first]
    verdicts = [r.stdout.strip().splitlines()[-1] for r in first]
    last = [v for v in verdicts if "the last of 2 shares to finish: all are done, 3 foreign key(s) between shares" in v]
    assert len(last) == 1, verdicts
    assert any("1 of 2 shares done, the last to finish adds the foreign keys between shares" in v for v in verdicts)
    # each share its own backup and report; together the whole source
    assert sorted(os.listdir(backup)) == ["share-0-of-2", "share-1-of-2"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("report")) == \
        ["report.share-0-of-2.json", "report.share-1-of-2.json"]
    fks = _fk_rows(server, pgdb)
    assert len(fks) == 4 and all(v for _, _, v in fks), fks
    assert sql(server, pgdb, 'SELECT count(*) FROM "user" WHERE username = %s', "admin") == [(1,)]
    r = run_cli(["verify", "--source", SAMPLE, "--target", pgdb], env)
    assert r.returncode == 0 and "OK: 4 table(s) identical" in r.stdout, r.stdout + r.stderr
    assert sql(server, pgdb, "SELECT share, status FROM _migrate.shares WHERE run_id = 'job-1' ORDER BY 1") == \
        [(0, "done"), (1, "done")]

    # the next Job (a new run id) converges: nothing reloaded, the keys dropped and put back
    again = _at_once(_shares(SAMPLE, pgdb, backup, "job-2", extra=["--seed-admin"]), env)
    assert [r.returncode for r in again] == [0, 0], [r.stderr[-2000:] for r in again]
    assert sum(r.stderr.count("table already loaded by an earlier run; skipped") for r in again) == 4
    assert _fk_rows(server, pgdb) == fks
    # and a whole run afterwards takes the same tables as its own
    r = run_cli(["run", "--source", SAMPLE, "--target", pgdb, "--backup-dir", str(tmp_path / "whole")], env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _fk_rows(server, pgdb) == fks


def test_shares_killed_at_random_moments_then_retried_converge(env, pgdb, server, tmp_path):
    """What an Indexed Job does when pods die: each index gets a new pod, same run id."""
    import random
    import signal
    import time
    sys.path.insert(0, ROOT)
    from examples.app.generate_sample import generate
    from independent import compare
    src = str(tmp_path / "app.db")
    generate(src, users=300, datasets=1500, jobs=40_000)
    commands = _shares(src, pgdb, str(tmp_path / "b"), "job", extra=["--workers", "1"])
    env = {**env, "MIGRATE_LOG_FORMAT": "json"}
    rng = random.Random(20261124)
    for _ in range(4):  # both pods at once, each killed at a moment of its own (some may finish)
        procs = [subprocess.Popen([sys.executable, "-m", "migrate", *c], env=env, cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for c in commands]
        kill_at = [time.monotonic() + rng.uniform(0.3, 3.5) for _ in procs]
        while any(p.poll() is None for p in procs):
            for p, at in zip(procs, kill_at):
                if p.poll() is None and time.monotonic() >= at:
                    p.send_signal(signal.SIGKILL)
            time.sleep(0.02)
    final = _at_once(commands, env)
    assert [r.returncode for r in final] == [0, 0], [r.stderr[-2000:] for r in final]
    assert any("the last of 2 shares to finish" in r.stdout for r in final)
    assert compare(src, pgdb, server.password) == []
    fks = _fk_rows(server, pgdb)
    assert len(fks) == 4 and all(v for _, _, v in fks), fks
    assert sql(server, pgdb, "SELECT status FROM _migrate.shares WHERE run_id = 'job'") == [("done",), ("done",)]


def _cross(make_sqlite, orphan=False, name="src.db", label="x", parent_label="p"):
    """parent (big: a share of its own), child -> parent, grand -> child, in two shares."""
    rows = [(i, f"{parent_label}{i}") for i in range(1, 301)]
    kids = [(i, (i % 300) + 1 + (10_000 if orphan and i in (7, 8) else 0), label) for i in range(1, 201)]
    return make_sqlite("""
        CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT);
        CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id), note TEXT);
        CREATE TABLE grand (id INTEGER PRIMARY KEY, child_id INTEGER REFERENCES child(id));
    """, name=name, params=[("INSERT INTO parent VALUES (?, ?)", rows), ("INSERT INTO child VALUES (?, ?, ?)", kids),
                            ("INSERT INTO grand VALUES (?, ?)", [(i, i) for i in range(1, 101)])])


def test_the_last_share_joins_and_its_retry_finishes_a_join_a_crash_cut_short(env, cli, pgdb, server, make_sqlite, tmp_path):
    src = _cross(make_sqlite)
    backup = str(tmp_path / "b")
    one, two = _shares(src, pgdb, backup, "r")
    r = cli(*one)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "1 of 2 shares done" in r.stdout
    # share 0 holds parent; share 1 holds child and grand, with the key between them (its own)
    assert _fk_rows(server, pgdb) == []
    r = cli(*two)
    assert r.returncode == 0 and "the last of 2 shares to finish" in r.stdout, r.stdout + r.stderr[-2000:]
    assert _fk_rows(server, pgdb) == [("child", "child_fk1", True), ("grand", "grand_fk1", True)]
    # one share's backup restored on its own is not the whole source, and says so
    r = cli("restore", "--backup-dir", os.path.join(backup, "share-0-of-2"), "--target", pgdb,
            "--target-schema", "alone")
    assert r.returncode == 9, r.stdout + r.stderr[-2000:]
    assert ("the backup itself is partial: share 0 (of 0..1) of run 'r': the other tables are in the backups "
            "of the other shares (share-*-of-2)") in r.stdout
    # a crash of the last share in the middle of its join: the key between shares is missing
    # (or left NOT VALID); the pod's retry, same run id, is last again and finishes the join
    sql(server, pgdb, "ALTER TABLE child DROP CONSTRAINT child_fk1")
    r = cli(*two)
    assert r.returncode == 0 and "the last of 2 shares to finish" in r.stdout, r.stdout + r.stderr[-2000:]
    assert _fk_rows(server, pgdb) == [("child", "child_fk1", True), ("grand", "grand_fk1", True)]
    # a retry of the first share after everything is done is last too, and changes nothing
    r = cli(*one)
    assert r.returncode == 0 and "the last of 2 shares to finish" in r.stdout, r.stdout + r.stderr[-2000:]
    assert _fk_rows(server, pgdb) == [("child", "child_fk1", True), ("grand", "grand_fk1", True)]
    # the next run of a changed source reloads the parent, which another share's key points at:
    # the first share of that run drops the migration's keys before any share loads
    changed = _cross(make_sqlite, name="changed.db", parent_label="q")
    one, two = _shares(changed, pgdb, str(tmp_path / "b2"), "r2")
    for args in (one, two):
        r = cli(*args)
        assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert "the last of 2 shares to finish" in r.stdout
    assert sql(server, pgdb, "SELECT name FROM parent WHERE id = 1") == [("q1",)]
    assert _fk_rows(server, pgdb) == [("child", "child_fk1", True), ("grand", "grand_fk1", True)]


def test_orphans_between_shares_fail_the_last_share_with_their_keys(cli, pgdb, server, make_sqlite, tmp_path):
    src = _cross(make_sqlite, orphan=True)
    one, two = _shares(src, pgdb, str(tmp_path / "b"), "r")
    assert cli(*one).returncode == 0
    r = cli(*two)
    assert r.returncode == 5, r.stdout + r.stderr[-2000:]
    assert ("table 'child': foreign key (parent_id) -> 'parent': 2 orphan row(s) whose parent does not exist, "
            "e.g. id=7; id=8") in r.stdout
    assert "FAILED: share 1 (of 0..1): 1 constraint error(s); the last of 2 shares to finish: all are done, " \
           "0 foreign key(s) between shares validated (exit 5)" in r.stdout
    assert _fk_rows(server, pgdb) == [("grand", "grand_fk1", True)]


def test_shares_that_read_different_sources_are_refused_by_the_last(cli, pgdb, server, make_sqlite, tmp_path):
    a = _cross(make_sqlite, name="a.db")
    b = _cross(make_sqlite, name="b.db", label="changed")  # same tables and row counts: the same split
    one = _shares(a, pgdb, str(tmp_path / "b"), "r")[0]
    two = _shares(b, pgdb, str(tmp_path / "b"), "r")[1]
    assert cli(*one).returncode == 0
    r = cli(*two)
    assert r.returncode == 6, r.stdout + r.stderr[-2000:]
    assert "the shares of run 'r' read different source files (SHA-256 share 0: " in r.stderr
    assert "foreign keys between shares were not added" in r.stderr
    assert _fk_rows(server, pgdb) == [("grand", "grand_fk1", True)]


@pytest.mark.parametrize("args, extra_env, message", [
    (["--shares", "2", "--share-index", "0"], {}, "--shares needs --run-id (MIGRATE_RUN_ID)"),
    (["--shares", "2", "--run-id", "r"], {}, "share index None is not one of 0..1"),
    (["--shares", "2", "--run-id", "r"], {"JOB_COMPLETION_INDEX": "2"}, "share index 2 is not one of 0..1"),
    (["--shares", "2", "--share-index", "1", "--run-id", "r", "--schema", "x.sql"], {},
     "--shares cannot be used with --schema/--schema-from"),
    (["--shares", "2", "--share-index", "1", "--run-id", "r", "--fill-null", "t.c=@admin"], {},
     "--shares cannot be used with --fill-null ...=@admin"),
    (["--shares", "0", "--share-index", "0", "--run-id", "r"], {}, "shares: 0 is not a number of shares"),
])
def test_a_share_that_cannot_work_is_refused_before_anything_is_opened(cli, tmp_path, args, extra_env, message):
    r = cli("run", "--source", SAMPLE, "--target", "postgresql://nobody@127.0.0.1:1/none",
            "--backup-dir", str(tmp_path / "b"), *args, extra_env=extra_env)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not (tmp_path / "b").exists()


def test_restore_refuses_shares(cli, tmp_path):
    r = cli("restore", "--backup-dir", str(tmp_path), "--target", "postgresql://nobody@127.0.0.1:1/none",
            extra_env={"MIGRATE_SHARES": "2", "MIGRATE_SHARE_INDEX": "0", "MIGRATE_RUN_ID": "r"})
    assert r.returncode == 2 and "--shares works with run only" in r.stderr, r.stderr


def test_shares_run_at_once_but_not_beside_a_whole_run_or_a_second_pod_of_one_share(pgdb, server):
    def target():
        return Target(pgdb, password=server.password, lock_timeout_s=1)
    s0, s1, s0_again, whole = target(), target(), target(), target()
    s0.lock(1, share="0")
    try:
        s1.lock(1, share="1")  # another share: at once
        with pytest.raises(LockedError, match=r"still holds the lock after 0 s \(migrate:public:share 0\)"):
            s0_again.lock(0.5, share="0")
        with pytest.raises(LockedError):
            whole.lock(0.5)
        s1.unlock()
    finally:
        s0.unlock()
    whole.lock(1)  # every share gone: a whole run may start
    try:
        with pytest.raises(LockedError):
            s1.lock(0.5, share="1")
    finally:
        whole.unlock()


def test_plan_shows_the_split_every_share_computes(cli, make_sqlite, tmp_path):
    import json
    r = cli("plan", "--source", _cross(make_sqlite), "--shares", "2", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["shares"] == [{"share": 0, "tables": ["parent"], "rows": 300},
                              {"share": 1, "tables": ["child", "grand"], "rows": 300}]
    assert plan["keys_between_shares"] == ["child (parent_id) -> parent"]
    r = cli("plan", "--source", _cross(make_sqlite, name="again.db"), "--shares", "2")
    assert "  share 1: 300 rows: child, grand" in r.stdout
    assert "foreign keys between shares (added by the last share to finish): child (parent_id) -> parent" in r.stdout
