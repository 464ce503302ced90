"""Operator experience: JSON log lines, progress events, STEP lines, the report matching
the database, filters and trial runs marked partial."""
import json
import os
import shutil

from conftest import REALDB, pg_connect

CHINOOK = os.path.join(REALDB, "chinook", "Chinook_Sqlite.sqlite")


def _events(stderr):
    events = []
    for line in stderr.splitlines():
        if line.startswith(("error: ", "hint: ")):
            continue
        events.append(json.loads(line))  # every other line is one JSON object
    return events


def test_json_logs_steps_progress_and_report_match_the_database(tmp_path, cli, pgdb, server):
    src = shutil.copy(CHINOOK, tmp_path / "c.db")
    report = tmp_path / "r.json"
    r = cli("run", "--source", str(src), "--target", pgdb, "--backup-dir", str(tmp_path / "b"), "--report",
            str(report), "--progress-interval", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    events = _events(r.stderr)
    steps = [e["event"] for e in events if e["event"].startswith("STEP ")]
    assert steps == ["STEP 1/7 wait for target", "STEP 2/7 read source", "STEP 3/7 init schema", "STEP 4/7 backup",
                     "STEP 5/7 restore", "STEP 6/7 post-data", "STEP 7/7 verify"]
    assert all("phase" in e and "level" in e and "timestamp" in e for e in events)
    table_events = [e for e in events if e["event"] in ("table backed up", "table loaded", "table verified")]
    assert table_events and all(e.get("table") for e in table_events)
    progress = [e for e in events if e["event"] == "progress"]
    assert {e["phase"] for e in progress} == {"backup", "restore"}
    last = [e for e in progress if e["phase"] == "restore"][-1]
    assert last["rows_done"] == last["rows_total"] == 15607 and last["percent"] == 100.0
    assert all({"table", "rows_per_s", "eta_s", "table_rows_done", "table_rows_total"} <= set(e) for e in progress)
    assert all(pgdb.split("@")[0] not in json.dumps(e) or "***" not in e for e in events)
    # the report says what the database holds
    rep = json.loads(report.read_text())
    conn = pg_connect(server, pgdb)
    cur = conn.cursor()
    for t in rep["tables"]:
        cur.execute(f'SELECT count(*) FROM "{t["pg_name"]}"')
        assert cur.fetchone()[0] == t["target_rows"] == t["source_rows"]
    conn.close()
    assert rep["status"] == "ok" and rep["exit_code"] == 0 and rep["totals"]["tables_ok"] == 11
    md = (tmp_path / "b" / "report.md").read_text()
    assert "# migrate report: ok" in md and "PlaylistTrack" in md
    assert r.stdout.strip().splitlines()[-1] == "OK: 11 table(s), 15,607 rows migrated and verified (exit 0)"


def test_filters_and_limit_are_partial_exit_9(tmp_path, cli, pgdb):
    src = shutil.copy(CHINOOK, tmp_path / "c.db")
    report = tmp_path / "r.json"
    r = cli("run", "--source", str(src), "--target", pgdb, "--backup-dir", str(tmp_path / "b"), "--report",
            str(report), "--table", "Artist", "--table", "Al*", "--limit", "10")
    assert r.returncode == 9, r.stderr[-2000:]
    rep = json.loads(report.read_text())
    assert [t["table"] for t in rep["tables"]] == ["Artist", "Album"]
    assert [t["target_rows"] for t in rep["tables"]] == [10, 10]
    assert rep["status"] == "partial"
    assert "trial run: at most 10 rows per table (--limit)" in rep["partial"]
    assert "table 'Track' left out by --table/--exclude-table" in rep["partial"]
    assert "PARTIAL: migrated and verified, but only part of the source" in r.stdout
    # the backup remembers why it is partial: restored on its own, it says so too
    r = cli("restore", "--backup-dir", str(tmp_path / "b"), "--target", pgdb, "--target-schema", "again")
    assert r.returncode == 9, r.stderr[-2000:]
    partial = next(line for line in r.stdout.splitlines() if line.startswith("partial: the backup itself is partial: "))
    assert "table 'Track' left out by --table/--exclude-table" in partial
    assert "trial run: at most 10 rows per table (--limit)" in partial
    r = cli("plan", "--source", str(src), "--exclude-table", "*", "--table", "nothing*")
    assert r.returncode == 2 and "error: --table nothing* matches no table of the source" in r.stderr


def test_plan_json_and_dry_run_alias(tmp_path, cli):
    src = shutil.copy(CHINOOK, tmp_path / "c.db")
    r = cli("run", "--dry-run", "--source", str(src), "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    order = plan["restore_order"]
    assert order.index("Artist") < order.index("Album") < order.index("Track") < order.index("InvoiceLine")
    assert plan["total_rows"] == 15607 and plan["estimated_seconds"] > 0
    track = next(t for t in plan["tables"] if t["table"] == "Track")
    assert {c["name"]: c["pg_type"] for c in track["columns"]}["UnitPrice"] == "numeric"


def test_help_has_an_example_for_every_command(cli):
    for command in ("run", "backup", "init-schema", "restore", "verify", "plan", "seed-admin"):
        r = cli(command, "--help")
        assert r.returncode == 0 and "example:\n  " in r.stdout and "exit codes:" in r.stdout, command
