"""The command line's contract: exit codes and the messages operators see."""
import json
import os
import shutil
import sqlite3

import pytest

from conftest import REALDB, pg_connect, sql
from independent import compare

APP = """
CREATE TABLE "user" (id INTEGER PRIMARY KEY, name TEXT NOT NULL, created DATETIME DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE "order" (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES "user"(id), total NUMERIC);
INSERT INTO "user" VALUES (1, 'ada', '2024-01-02 03:04:05'), (2, 'bob', '2024-01-02T03:04:05.5Z');
INSERT INTO "order" VALUES (10, 1, 9.99), (11, 2, 100), (12, NULL, 0.5);
"""


def tables_in(server, url, schema="public"):
    conn = pg_connect(server, url)
    cur = conn.cursor()
    cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,))
    out = [r[0] for r in cur.fetchall()]
    conn.close()
    return out


# --------------------------------------------------------------- source errors --
@pytest.mark.parametrize("kind,expect", [
    ("missing", "no such file"),
    ("directory", "is a directory, not a SQLite file"),
    ("empty", "empty file (0 bytes), not a SQLite database"),
    ("text", "not a SQLite database (bad header)"),
    ("truncated", "corrupt or not a SQLite database"),
])
def test_unusable_source_exit_3(tmp_path, cli, kind, expect):
    path = tmp_path / "src.db"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("id,name\n1,ada\n")
    elif kind == "truncated":
        shutil.copy(os.path.join(REALDB, "chinook", "Chinook_Sqlite.sqlite"), path)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 3)
    r = cli("plan", "--source", str(path))
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: source '{path}'")
    assert expect in r.stderr
    assert "Traceback" not in r.stderr


def test_usage_errors_exit_2(cli):
    assert cli().returncode == 2
    r = cli("run", "--source", "x.db")
    assert r.returncode == 2
    assert "error: missing --target / MIGRATE_TARGET and --backup-dir / MIGRATE_BACKUP_DIR" in r.stderr
    r = cli("verify", "--source", "x.db", "--target", "mysql://u@h/db")
    assert r.returncode == 2 and "target must be a postgresql:// URL" in r.stderr
    r = cli("plan", "--source", "x.db", "--column-type", "nodot=text")
    assert r.returncode == 2 and "expected TABLE.COLUMN=TYPE" in r.stderr


# --------------------------------------------------------------- target errors --
def test_unreachable_target_exit_4_after_waiting(make_sqlite, cli, tmp_path):
    src = make_sqlite(APP)
    r = cli("run", "--source", src, "--target", "postgresql://u@127.0.0.1:1/db", "--backup-dir",
            str(tmp_path / "b"), "--wait-timeout", "2")
    assert r.returncode == 4
    assert "Connection refused" in r.stderr or "connection refused" in r.stderr
    assert "gave up after" in r.stderr


def test_wrong_password_exit_4_and_never_printed(make_sqlite, cli, pgdb, tmp_path):
    src = make_sqlite(APP)
    r = cli("run", "--source", src, "--target", pgdb, "--backup-dir", str(tmp_path / "b"),
            extra_env={"MIGRATE_TARGET_PASSWORD": "Sup3r-s3cret-pw"})
    assert r.returncode == 4
    assert "authentication failed" in r.stderr
    assert "Sup3r-s3cret-pw" not in r.stdout + r.stderr
    # a password inside the URL is masked too
    bad = pgdb.replace("postgres@", "postgres:Inl1ne-pw@")
    r = cli("run", "--source", src, "--target", bad, "--backup-dir", str(tmp_path / "b"), "--report",
            str(tmp_path / "r.json"), extra_env={"MIGRATE_TARGET_PASSWORD": ""})
    assert r.returncode == 4
    assert "Inl1ne-pw" not in r.stdout + r.stderr + (tmp_path / "r.json").read_text()


def test_missing_database_exit_4(make_sqlite, cli, pgdb, tmp_path):
    src = make_sqlite(APP)
    r = cli("run", "--source", src, "--target", pgdb + "_nope", "--backup-dir", str(tmp_path / "b"))
    assert r.returncode == 4 and "does not exist" in r.stderr


# ----------------------------------------------------- conflicts and re-runs --
def test_refuses_foreign_tables_exit_7_then_replace(make_sqlite, cli, pgdb, server, tmp_path):
    src = make_sqlite(APP)
    sql(server, pgdb, 'CREATE TABLE "order" (x int)')
    r = cli("run", "--source", src, "--target", pgdb, "--backup-dir", str(tmp_path / "b"))
    assert r.returncode == 7
    assert "already holds table(s) this tool did not create: order" in r.stderr
    assert tables_in(server, pgdb) == ["order"]  # nothing half-done: "user" was not created
    r = cli("run", "--source", src, "--target", pgdb, "--backup-dir", str(tmp_path / "b"), "--replace")
    assert r.returncode == 0, r.stderr
    assert compare(src, pgdb, server.password) == []


def test_target_schema_and_env_precedence(make_sqlite, cli, pgdb, server, tmp_path):
    src = make_sqlite(APP)
    r = cli("run", "--target-schema", "Legacy App", extra_env={
        "MIGRATE_SOURCE": "/nonexistent.db", "DATABASE_URL": pgdb,
        "MIGRATE_BACKUP_DIR": str(tmp_path / "b")}, timeout=120) if False else None
    env = {"MIGRATE_SOURCE": src, "DATABASE_URL": pgdb, "MIGRATE_BACKUP_DIR": str(tmp_path / "b")}
    r = cli("run", "--target-schema", "Legacy App", extra_env=env)
    assert r.returncode == 0, r.stderr
    assert tables_in(server, pgdb, "Legacy App") == ["order", "user"]
    # a flag wins over the environment
    r = cli("plan", "--source", src, extra_env={"MIGRATE_SOURCE": "/nonexistent.db"})
    assert r.returncode == 0


# ------------------------------------------------------------------ data errors --
BAD_DATES = """
CREATE TABLE event (id INTEGER PRIMARY KEY, at DATETIME, note TEXT);
INSERT INTO event VALUES (1, '2024-01-01 10:00:00', 'ok'), (2, '2024-02-30 10:00:00', 'impossible'),
                         (3, 1700000000, 'epoch s'), (4, 1700000000123, 'epoch ms'), (5, 'soon', 'text');
CREATE TABLE other (id INTEGER PRIMARY KEY);
INSERT INTO other VALUES (1);
"""


def test_conversion_error_names_where_and_loads_nothing(make_sqlite, cli, pgdb, server, tmp_path):
    src = make_sqlite(BAD_DATES)
    r = cli("run", "--source", src, "--target", pgdb, "--backup-dir", str(tmp_path / "b"))
    assert r.returncode == 5
    msg = r.stderr.strip().splitlines()
    assert ("error: table 'event', row id=2, column 'at': value '2024-02-30 10:00:00' cannot become timestamp: "
            "impossible date/time (day is out of range for month) (2 bad value(s) in 1 table(s); nothing was loaded)"
            ) in msg
    assert any(line.startswith("hint: ") and "--on-error reject" in line for line in msg)
    assert sql(server, pgdb, "SELECT count(*) FROM event") == [(0,)]
    assert sql(server, pgdb, "SELECT count(*) FROM other") == [(0,)]
    # the other table's converted rows were spilled for the load; a failed run removes them too
    assert sorted(os.listdir(tmp_path / "b" / "tables")) == ["0001-event.jsonl", "0002-other.jsonl"]


def test_on_error_reject_loads_good_rows_and_lists_bad(make_sqlite, cli, pgdb, server, tmp_path):
    src = make_sqlite(BAD_DATES)
    report = tmp_path / "r.json"
    r = cli("run", "--source", src, "--target", pgdb, "--backup-dir", str(tmp_path / "b"),
            "--on-error", "reject", "--report", str(report))
    assert r.returncode == 5, r.stderr
    rows = sql(server, pgdb, "SELECT id, at::text FROM event ORDER BY id")
    assert rows == [(1, "2024-01-01 10:00:00"), (3, "2023-11-14 22:13:20"), (4, "2023-11-14 22:13:20.123")]
    rejects = [json.loads(x) for x in (tmp_path / "b" / "rejects").glob("*event*").__next__().read_text().splitlines()]
    assert [(x["key"], x["column"], x["reason"]) for x in rejects] == [
        ({"id": 2}, "at", "impossible date/time (day is out of range for month)"),
        ({"id": 5}, "at", "not an ISO-8601 date/time (YYYY-MM-DD[ T]HH:MM[:SS[.ffffff]][Z|+HH:MM])")]
    assert rejects[0]["row"] == [2, "2024-02-30 10:00:00", "impossible"]
    rep = json.loads(report.read_text())
    ev = next(t for t in rep["tables"] if t["table"] == "event")
    assert (ev["source_rows"], ev["target_rows"], ev["rejected"], ev["verdict"]) == (5, 3, 2, "ok")
    assert rep["status"] == "failed" and "2 row(s) rejected" in rep["message"]
    assert not [f for f in os.listdir(tmp_path / "b" / "tables") if not f.endswith(".jsonl")]


ORPHANS = """
PRAGMA foreign_keys = OFF;
CREATE TABLE parent (id INTEGER PRIMARY KEY);
CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent);
INSERT INTO parent VALUES (1);
INSERT INTO child VALUES (1, 1), (2, 99), (3, NULL);
"""


def test_orphans_reported_with_keys_or_loaded_not_valid(make_sqlite, cli, pgdb, server, tmp_path):
    src = make_sqlite(ORPHANS)
    plan = cli("plan", "--source", src)
    assert "1 orphan row(s)" in plan.stdout
    r = cli("run", "--source", src, "--target", pgdb, "--backup-dir", str(tmp_path / "b"), "--report",
            str(tmp_path / "r.json"))
    assert r.returncode == 5
    rep = json.loads((tmp_path / "r.json").read_text())
    assert any("1 orphan row(s) whose parent does not exist, e.g. id=2" in e for e in rep["errors"])
    assert sql(server, pgdb, "SELECT conname FROM pg_constraint WHERE contype = 'f'") == []  # not left half-made
    r = cli("run", "--source", src, "--target", pgdb, "--backup-dir", str(tmp_path / "b"), "--orphans", "not-valid")
    assert r.returncode == 0, r.stderr
    assert sql(server, pgdb, "SELECT convalidated FROM pg_constraint WHERE contype = 'f'") == [(False,)]


def test_a_key_left_not_valid_is_validated_by_the_next_run(make_sqlite, cli, pgdb, server, tmp_path):
    """Keys are added NOT VALID, then validated: a crash in between leaves a key that
    looks present. The next run validates it instead of taking it as done."""
    src = make_sqlite(ORPHANS.replace("(2, 99), ", ""))
    args = ("run", "--source", src, "--target", pgdb, "--backup-dir", str(tmp_path / "b"))
    assert cli(*args).returncode == 0
    key = "SELECT conname, convalidated FROM pg_constraint WHERE contype = 'f'"
    assert sql(server, pgdb, key) == [("child_fk1", True)]
    sql(server, pgdb, "ALTER TABLE child DROP CONSTRAINT child_fk1")
    sql(server, pgdb, "ALTER TABLE child ADD CONSTRAINT child_fk1 FOREIGN KEY (parent_id) REFERENCES parent NOT VALID")
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert sql(server, pgdb, key) == [("child_fk1", True)]


# ------------------------------------------------------------------ verify --
def test_verify_detects_tampering_down_to_the_row(make_sqlite, cli, pgdb, server, tmp_path):
    src = shutil.copy(os.path.join(REALDB, "chinook", "Chinook_Sqlite.sqlite"), tmp_path / "c.db")
    r = cli("run", "--source", str(src), "--target", pgdb, "--backup-dir", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    sql(server, pgdb, 'UPDATE "Track" SET "Milliseconds" = "Milliseconds" + 1 WHERE "TrackId" = 42')
    sql(server, pgdb, 'DELETE FROM "InvoiceLine" WHERE "InvoiceLineId" = 7')
    sql(server, pgdb, 'UPDATE "Invoice" SET "Total" = 1.9800001 WHERE "InvoiceId" = 5')
    r = cli("verify", "--backup-dir", str(tmp_path / "b"), "--target", pgdb)
    assert r.returncode == 6
    assert "1 row(s) different in target, key (TrackId): (42)" in r.stdout
    assert "1 row(s) missing from target, key (InvoiceLineId): (7)" in r.stdout
    assert "1 row(s) different in target, key (InvoiceId): (5)" in r.stdout
    assert "error: 3 of 11 table(s) differ: Invoice, Track, InvoiceLine" in r.stderr
    # re-running the migration repairs exactly those tables
    r = cli("run", "--source", str(src), "--target", pgdb, "--backup-dir", str(tmp_path / "b"))
    assert r.returncode == 0
    assert compare(str(src), pgdb, server.password) == []


def test_plan_writes_nothing_and_shows_census(make_sqlite, cli, tmp_path):
    src = make_sqlite("""CREATE TABLE t (n INTEGER, v VARCHAR(3), x);
        INSERT INTO t VALUES (1, 'much longer than three', 1), ('abc', 'y', 'z'), (2.5, NULL, x'00');""")
    before = sorted(os.listdir(tmp_path))
    r = cli("plan", "--source", src, "--json")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path)) == before
    plan = json.loads(r.stdout)
    cols = {c["name"]: c for c in plan["tables"][0]["columns"]}
    assert cols["n"]["census"] == {"integer": 1, "real": 1, "text": 1}
    assert cols["n"]["pg_type"] == "text" and "holds 1 TEXT value(s)" in cols["n"]["decision"]
    assert cols["v"]["pg_type"] == "text" and cols["v"]["decision"] is None
    assert cols["x"]["pg_type"] == "bytea"
    human = cli("plan", "--source", src).stdout
    assert "decision: declared 'INTEGER' but holds 1 TEXT value(s)" in human


# ------------------------------------------------------------------ backup --
def test_incomplete_backup_is_refused_exit_10(make_sqlite, cli, pgdb, tmp_path):
    src = make_sqlite(APP)
    assert cli("backup", "--source", src, "--backup-dir", str(tmp_path / "b")).returncode == 0
    os.remove(tmp_path / "b" / "manifest.json")  # as a crash before the manifest leaves it
    r = cli("restore", "--backup-dir", str(tmp_path / "b"), "--target", pgdb)
    assert r.returncode == 10 and "is incomplete: no manifest.json" in r.stderr


def test_corrupt_backup_file_is_detected(make_sqlite, cli, pgdb, tmp_path):
    src = make_sqlite(APP)
    assert cli("backup", "--source", src, "--backup-dir", str(tmp_path / "b")).returncode == 0
    f = next((tmp_path / "b" / "tables").glob("*user*"))
    f.write_bytes(f.read_bytes().replace(b"ada", b"eve"))
    r = cli("restore", "--backup-dir", str(tmp_path / "b"), "--target", pgdb)
    assert r.returncode == 10 and "does not match its manifest" in r.stderr


def test_restore_from_backup_alone_and_sqlite_url(make_sqlite, cli, pgdb, server, tmp_path):
    src = make_sqlite(APP, name="my app.sqlite3")
    assert cli("backup", "--source", "sqlite:///" + src, "--backup-dir", str(tmp_path / "b")).returncode == 0
    keep = str(tmp_path / "keep.db")
    shutil.move(src, keep)
    r = cli("restore", "--backup-dir", str(tmp_path / "b"), "--target", pgdb)
    assert r.returncode == 0, r.stderr
    assert compare(keep, pgdb, server.password) == []
    # the app's next INSERT works: identity past max(id)
    assert sql(server, pgdb, 'INSERT INTO "order" (user_id, total) VALUES (1, 1) RETURNING id') == [(13,)]
    assert sql(server, pgdb, "SELECT column_default FROM information_schema.columns WHERE table_name='user' "
                             "AND column_name='created'") == [("(CURRENT_TIMESTAMP AT TIME ZONE 'UTC'::text)",)]


def test_wal_snapshot_includes_uncheckpointed_rows_and_leaves_no_files(tmp_path, cli, pgdb, server):
    src = str(tmp_path / "wal.db")
    writer = sqlite3.connect(src)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    writer.executemany("INSERT INTO t (v) VALUES (?)", [(str(i),) for i in range(1000)])
    writer.commit()
    assert os.path.getsize(src + "-wal") > 0
    r = cli("run", "--source", src, "--target", pgdb, "--backup-dir", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    assert sql(server, pgdb, "SELECT count(*) FROM t") == [(1000,)]
    writer.close()
    assert not os.path.exists(src + "-wal") and not os.path.exists(src + "-shm")


def test_gzip_backup_restores_and_verifies(make_sqlite, cli, pgdb, server, tmp_path):
    src = shutil.copy(os.path.join(REALDB, "chinook", "Chinook_Sqlite.sqlite"), tmp_path / "c.db")
    r = cli("backup", "--source", str(src), "--backup-dir", str(tmp_path / "b"), "--backup-compress", "gzip")
    assert r.returncode == 0, r.stderr[-2000:]
    files = sorted(os.listdir(tmp_path / "b" / "tables"))
    assert files and all(f.endswith(".jsonl.gz") for f in files)
    r = cli("restore", "--backup-dir", str(tmp_path / "b"), "--target", pgdb)
    assert r.returncode == 0, r.stderr[-2000:]
    assert compare(str(src), pgdb, server.password) == []
    assert cli("verify", "--backup-dir", str(tmp_path / "b"), "--target", pgdb).returncode == 0


def test_plan_census_counts_nul_and_invalid_utf8(make_sqlite, cli, tmp_path):
    src = make_sqlite("""CREATE TABLE n (id INTEGER PRIMARY KEY, body TEXT);
        INSERT INTO n VALUES (1, 'ascii'), (2, 'é'), (3, CAST(x'ff41' AS TEXT)), (4, 'a' || char(0) || 'b'),
                             (5, 'tab' || char(9)), (6, 1700000000);""")
    plan = json.loads(cli("plan", "--source", src, "--json").stdout)
    census = plan["tables"][0]["columns"][1]["census"]
    assert census == {"text": 6, "text_nul": 1, "invalid_utf8": 1}  # TEXT affinity made the integer text


def test_verify_reports_orphans_without_calling_them_differences(make_sqlite, cli, pgdb, tmp_path):
    src = make_sqlite(ORPHANS)
    r = cli("run", "--source", src, "--target", pgdb, "--backup-dir", str(tmp_path / "b"), "--orphans", "not-valid")
    assert r.returncode == 0
    r = cli("verify", "--source", src, "--target", pgdb)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 orphan row(s) for foreign key (parent_id) -> 'parent', e.g. ['id'] = [(2,)]" in r.stdout


def test_orphan_scan_is_left_out_only_where_a_validated_key_guarantees_none(server, pgdb):
    """verify skips its orphan query for a foreign key PostgreSQL has validated on exactly
    those columns; a NOT VALID key, another column or another parent still gets the scan."""
    from migrate.phases.verify import enforced
    from migrate.postgres_target import Target
    from migrate.schema import Column, Table
    dbname = pgdb.rsplit("/", 1)[1]
    conn = server.connect(dbname)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute('CREATE TABLE p (id int PRIMARY KEY, k int UNIQUE); '
                'CREATE TABLE "order" (id int PRIMARY KEY, a int REFERENCES p(id), b int, c int); '
                'INSERT INTO p VALUES (1, 10); INSERT INTO "order" VALUES (1, 1, 7, 10); '
                'ALTER TABLE "order" ADD FOREIGN KEY (b) REFERENCES p(id) NOT VALID')
    target = Target(pgdb, password=server.password)

    def table(name, cols):
        t = Table(name, [Column(c, "INTEGER", False, None, 0) for c in cols])
        for c in t.columns:
            c.pg_name = c.name
        t.pg_name = name
        return t
    child, parent = table("order", ["id", "a", "b", "c"]), table("p", ["id", "k"])
    pair = lambda a, b: [(child.column(a), parent.column(b))]  # noqa: E731
    assert enforced(cur, target, child, parent, pair("a", "id"))
    assert not enforced(cur, target, child, parent, pair("b", "id"))  # NOT VALID
    assert not enforced(cur, target, child, parent, pair("c", "k"))  # no key at all
    assert not enforced(cur, target, child, parent, pair("a", "k"))  # another parent column
    assert not enforced(cur, target, child, child, [(child.column("a"), child.column("id"))])
    conn.close()
