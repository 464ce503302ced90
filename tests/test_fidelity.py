"""The fidelity corpus: one real SQLite fixture per quirk of real-world files, each with
its expected outcome (migrates exactly, or stops with a precise message)."""
import json
import sqlite3

from conftest import sql
from independent import compare


def run(cli, src, pgdb, tmp_path, *extra):
    report = tmp_path / "report.json"
    r = cli("run", "--source", src, "--target", pgdb, "--backup-dir", str(tmp_path / "b"), "--report",
            str(report), *extra)
    return r, (json.loads(report.read_text()) if report.exists() else None)


KEYS = """
PRAGMA foreign_keys = ON;
CREATE TABLE country (code TEXT PRIMARY KEY, name TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE blobkey (k BLOB PRIMARY KEY, v INTEGER);
CREATE TABLE city (country TEXT NOT NULL REFERENCES country, name TEXT NOT NULL, pop INTEGER,
                   PRIMARY KEY (country, name));
CREATE TABLE street (id INTEGER PRIMARY KEY, country TEXT, city TEXT, parent INTEGER REFERENCES street(id),
                     FOREIGN KEY (country, city) REFERENCES city (country, name));
CREATE TABLE a (id INTEGER PRIMARY KEY, b_id INTEGER REFERENCES b(id));
CREATE TABLE b (id INTEGER PRIMARY KEY, a_id INTEGER REFERENCES a(id));
CREATE TABLE nokey (x TEXT, y REAL);
INSERT INTO country VALUES ('DE', 'Germany'), ('FR', 'France');
INSERT INTO blobkey VALUES (x'00ff', 1), (x'', 2);
INSERT INTO city VALUES ('DE', 'Berlin', 3600000), ('FR', 'Paris', 2100000);
INSERT INTO street VALUES (1, 'DE', 'Berlin', NULL), (2, 'DE', 'Berlin', 1), (3, 'FR', 'Paris', 2);
PRAGMA foreign_keys = OFF;
INSERT INTO a VALUES (1, 1); INSERT INTO b VALUES (1, 1);
INSERT INTO nokey VALUES ('dup', 1.5), ('dup', 1.5), (NULL, NULL);
"""


def test_keys_without_rowid_composite_cycles_self_references(make_sqlite, cli, pgdb, server, tmp_path):
    src = make_sqlite(KEYS)
    r, rep = run(cli, src, pgdb, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert compare(src, pgdb, server.password) == []
    fks = sql(server, pgdb, "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
                          "WHERE contype = 'f' ORDER BY 1, 2")
    assert ("street", "FOREIGN KEY (country, city) REFERENCES city(country, name)") in fks
    assert ("street", "FOREIGN KEY (parent) REFERENCES street(id)") in fks
    assert ("city", "FOREIGN KEY (country) REFERENCES country(code)") in fks  # REFERENCES t: its primary key
    assert {("a", "FOREIGN KEY (b_id) REFERENCES b(id)"), ("b", "FOREIGN KEY (a_id) REFERENCES a(id)")} <= set(fks)
    assert sql(server, pgdb, "SELECT encode(k, 'hex') FROM blobkey ORDER BY v") == [("00ff",), ("",)]


NAMES = """
CREATE TABLE "user" ("select" TEXT, "group" INTEGER, "Mixed Case" TEXT, "we""ird" TEXT, "ünï cødé" TEXT);
CREATE TABLE "order" (id INTEGER PRIMARY KEY, "user" TEXT);
CREATE TABLE "{a}_one" (id INTEGER PRIMARY KEY, "{c}_x" TEXT, "{c}_y" TEXT);
CREATE TABLE "{a}_two" (id INTEGER PRIMARY KEY);
INSERT INTO "user" VALUES ('s', 1, 'M', 'q"uote', 'é');
INSERT INTO "order" VALUES (1, 'ada');
INSERT INTO "{a}_one" VALUES (1, 'x', 'y');
INSERT INTO "{a}_two" VALUES (1);
""".replace("{a}", "a" * 70).replace("{c}", "c" * 70)


def test_names_reserved_quoted_unicode_and_too_long(make_sqlite, cli, pgdb, server, tmp_path):
    src = make_sqlite(NAMES)
    plan = json.loads(cli("plan", "--source", src, "--json").stdout)
    long = {t["table"]: t["pg_name"] for t in plan["tables"] if t["table"].startswith("aaa")}
    assert len(set(long.values())) == 2 and all(len(v.encode()) <= 63 for v in long.values())
    one = next(t for t in plan["tables"] if t["table"] == "a" * 70 + "_one")
    assert len({c["pg_name"] for c in one["columns"]}) == 3
    r, rep = run(cli, src, pgdb, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sql(server, pgdb, 'SELECT "select", "group", "Mixed Case", "we""ird", "ünï cødé" FROM "user"') == [
        ("s", 1, "M", 'q"uote', "é")]
    assert sql(server, pgdb, f'SELECT count(*) FROM "{long["a" * 70 + "_two"]}"') == [(1,)]
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert {t["name"]: t["pg_name"] for t in m["tables"]}["a" * 70 + "_one"] == long["a" * 70 + "_one"]


OBJECTS = """
CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT COLLATE NOCASE, qty INTEGER CHECK (qty >= 0),
                   created DATETIME DEFAULT CURRENT_TIMESTAMP, stamp TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
                   total INTEGER GENERATED ALWAYS AS (qty * 2) STORED);
CREATE INDEX ix_name ON item (name COLLATE NOCASE);
CREATE INDEX ix_lower ON item (lower(name));
CREATE INDEX ix_partial ON item (qty) WHERE qty > 0;
CREATE INDEX ix_plain ON item (qty);
CREATE VIEW v_item AS SELECT * FROM item;
CREATE TRIGGER t_item AFTER INSERT ON item BEGIN SELECT 1; END;
INSERT INTO item (id, name, qty, created) VALUES (1, 'A', 1, '2024-01-01 00:00:00');
"""


def test_schema_objects_translated_or_reported(make_sqlite, cli, pgdb, server, tmp_path):
    src = make_sqlite(OBJECTS)
    r, rep = run(cli, src, pgdb, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    notes = "\n".join(rep["notes"])
    assert "index 'ix_name' not created: index with COLLATE NOCASE" in notes
    assert "index 'ix_lower' not created: expression index" in notes
    assert "index 'ix_partial' not created: partial index" in notes
    assert "generated column 'total' (stored) not copied" in notes
    assert "CHECK constraint(s) not translated" in notes
    skipped = {(s["kind"], s["name"]) for s in rep["skipped_objects"]}
    assert {("view", "v_item"), ("trigger", "t_item")} <= skipped
    assert set(sql(server, pgdb, "SELECT indexname FROM pg_indexes WHERE tablename = 'item'")) == {
        ("ix_plain",), ("item_pkey",)}
    defaults = dict(sql(server, pgdb, "SELECT column_name, column_default FROM information_schema.columns "
                                     "WHERE table_name = 'item'"))
    assert defaults["created"] == "(CURRENT_TIMESTAMP AT TIME ZONE 'UTC'::text)"
    assert defaults["stamp"] is None  # dropped with a warning, never copied as a string literal
    assert "table 'item': column 'stamp': default strftime('%Y-%m-%dT%H:%M:%fZ', 'now') is a SQLite expression " \
           "with no translation: dropped" in rep["notes"]


def test_virtual_tables_data_migrated_unreadable_one_makes_the_run_partial(tmp_path, cli, pgdb, server):
    src = str(tmp_path / "vt.db")
    conn = sqlite3.connect(src)
    conn.executescript("""
        CREATE VIRTUAL TABLE docs USING fts5(title, body);
        INSERT INTO docs VALUES ('hello', 'world'), ('sqlite', 'postgres');
        CREATE VIRTUAL TABLE boxes USING rtree(id, minx, maxx);
        INSERT INTO boxes VALUES (1, 0, 1), (2, -5.5, 5.5);
        CREATE TABLE plain (id INTEGER PRIMARY KEY, v TEXT);
        INSERT INTO plain VALUES (1, 'kept');
        PRAGMA writable_schema = ON;
        INSERT INTO sqlite_master VALUES ('table', 'ext', 'ext', 0, 'CREATE VIRTUAL TABLE ext USING nosuchmodule(a)');
    """)
    conn.commit()
    conn.close()
    r, rep = run(cli, src, pgdb, tmp_path)
    assert r.returncode == 9, r.stderr[-2000:]
    assert rep["status"] == "partial"
    assert any("virtual table 'ext' not migrated: module nosuchmodule cannot be read" in p for p in rep["partial"])
    assert sql(server, pgdb, "SELECT title, body FROM docs ORDER BY title") == [("hello", "world"), ("sqlite", "postgres")]
    assert sql(server, pgdb, "SELECT id, minx, maxx FROM boxes ORDER BY id") == [(1, 0.0, 1.0), (2, -5.5, 5.5)]
    assert sql(server, pgdb, "SELECT v FROM plain") == [("kept",)]
    assert not any(t["table"].startswith("docs_") for t in rep["tables"])


def test_dates_in_many_shapes_in_one_column(make_sqlite, cli, pgdb, server, tmp_path):
    src = make_sqlite("""CREATE TABLE ev (id INTEGER PRIMARY KEY, at DATETIME, day DATE);
        INSERT INTO ev VALUES (1, '2024-03-01 12:00:00', '2024-03-01'), (2, '2024-03-01T12:00:00Z', '2024-03-01 00:00:00'),
          (3, '2024-03-01T14:00:00+02:00', NULL), (4, '2024-03-01 12:00:00.123456', NULL), (5, 1709294400, NULL),
          (6, 1709294400123, NULL), (7, '2024-03-01 12:00', NULL), (8, '0999-12-31 23:59:59', '1600-02-29');""")
    r, rep = run(cli, src, pgdb, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sql(server, pgdb, "SELECT id, at::text, day::text FROM ev ORDER BY id") == [
        (1, "2024-03-01 12:00:00", "2024-03-01"), (2, "2024-03-01 12:00:00", "2024-03-01"),
        (3, "2024-03-01 12:00:00", None), (4, "2024-03-01 12:00:00.123456", None), (5, "2024-03-01 12:00:00", None),
        (6, "2024-03-01 12:00:00.123", None), (7, "2024-03-01 12:00:00", None), (8, "0999-12-31 23:59:59", "1600-02-29")]


import pytest  # noqa: E402


@pytest.mark.parametrize("name", ["world.mbtiles", "world map.gpkg", "app.sqlite3"])
def test_mbtiles_and_geopackage_style_files(tmp_path, cli, pgdb, server, name):
    src = str(tmp_path / name)
    conn = sqlite3.connect(src)
    conn.executescript("""
        CREATE TABLE metadata (name TEXT, value TEXT);
        CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB);
        CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row);
        INSERT INTO metadata VALUES ('name', 'world'), ('format', 'png');
        CREATE TABLE gpkg_contents (table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL,
                                    last_change DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')));
        INSERT INTO gpkg_contents VALUES ('tiles', 'tiles', '2024-01-01T00:00:00.000Z');
    """)
    conn.executemany("INSERT INTO tiles VALUES (?, ?, ?, ?)", [(z, x, 0, bytes(range(256)) * (z + 1)) for z in range(3)
                                                             for x in range(4)])
    conn.commit()
    conn.close()
    r, rep = run(cli, src, pgdb, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert compare(src, pgdb, server.password) == []


def test_very_long_values(make_sqlite, cli, pgdb, server, tmp_path):
    src = make_sqlite("CREATE TABLE big (id INTEGER PRIMARY KEY, body TEXT, data BLOB);",
                      params=[("INSERT INTO big VALUES (?, ?, ?)",
                               [(1, "é" * 5_000_000, bytes(range(256)) * 40_000), (2, "x", b"")])])
    r, rep = run(cli, src, pgdb, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sql(server, pgdb, "SELECT length(body), octet_length(data) FROM big ORDER BY id") == [
        (5_000_000, 10_240_000), (1, 0)]
