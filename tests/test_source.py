"""Reading SQLite: the census, counted in pieces and threads, equals the values' own count."""
from __future__ import annotations

import math
import sqlite3

from hypothesis import HealthCheck, given, settings, strategies as st

from migrate import sqlite_source
from migrate.sqlite_source import SourceDB

values = st.one_of(st.none(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False),
                   st.sampled_from([math.inf, -math.inf, "Inf", "-Infinity", "a\x00b", "\x00"]),
                   st.text(max_size=8), st.binary(max_size=8))


def _expected(column: list) -> dict:
    def kind(v):
        return {type(None): "null", int: "integer", float: "real", str: "text", bytes: "blob"}[type(v)]
    out = {k: 0 for k in ("null", "integer", "real", "text", "blob", "nonfinite", "text_nul")}
    for v in column:
        out[kind(v)] += 1
        out["nonfinite"] += isinstance(v, float) and math.isinf(v)
        out["text_nul"] += isinstance(v, str) and "\x00" in v
    return out


SHAPES = {  # the rowid as such, the rowid under another name (columns take 'rowid' and 'oid'), no rowid
    "rowid": "CREATE TABLE t (id INTEGER PRIMARY KEY, a, b TEXT)",
    "shadowed": "CREATE TABLE t (id INTEGER PRIMARY KEY, a, b TEXT, rowid TEXT DEFAULT 'x', oid INT DEFAULT -1)",
    "without rowid": "CREATE TABLE t (id INTEGER PRIMARY KEY, a, b TEXT) WITHOUT ROWID",
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(values, values), max_size=60), workers=st.integers(1, 3),
       spread=st.sampled_from([7, 2**56]), chunk=st.sampled_from([1, 2, 5, 2**20]),
       shape=st.sampled_from(sorted(SHAPES)), utf8_check=st.booleans())
def test_census_in_pieces_counts_every_value(tmp_path_factory, monkeypatch, rows, workers, spread, chunk, shape,
                                             utf8_check):
    """Counted in threads, in rowid ranges, in chunks of a few rows per query (the counts
    are packed into one sum per column), or whole where there is no rowid to cut at."""
    monkeypatch.setattr(sqlite_source, "SPLIT_MIN_ROWS", 4)  # small tables split too
    monkeypatch.setattr(sqlite_source, "CENSUS_CHUNK_MAX", chunk)
    path = tmp_path_factory.mktemp("census") / "c.db"
    conn = sqlite3.connect(path)
    # a: no affinity (each value keeps its class); b: TEXT affinity (numbers become text,
    # infinity the text 'Inf', which is not an infinity)
    conn.execute(SHAPES[shape])
    conn.executemany("INSERT INTO t (id, a, b) VALUES (?, ?, ?)",
                     [(i * spread + (1 if spread == 7 else -2**62), a, b) for i, (a, b) in enumerate(rows)])
    conn.commit()
    stored = conn.execute("SELECT a, b FROM t").fetchall()  # each value as SQLite stored it
    conn.close()
    with SourceDB(str(path)) as src:
        schema = src.read_schema(workers=workers, utf8_check=utf8_check)
    t = schema.tables[0]
    assert t.rowid == {"rowid": "rowid", "shadowed": "_rowid_", "without rowid": None}[shape]
    assert t.rows == len(rows)
    for i, c in enumerate(t.columns[1:3]):
        got = {k: getattr(c.census, k) for k in _expected([]).keys()}
        assert got == _expected([r[i] for r in stored]), c.name
        assert c.census.invalid_utf8 == 0


def test_census_fields_hold_full_chunks(make_sqlite):
    """The packed counts at their limits: chunks of as many rows as a field can count (rowid
    tables), and a whole table without rowid, with every value of a column in one class."""
    for shape in ("rowid", "without rowid"):
        path = make_sqlite(SHAPES[shape], name=f"{shape}.db".replace(" ", "_"),
                           params=[("INSERT INTO t VALUES (?, ?, ?)", [(i, i, b"\x00") for i in range(3000)])])
        with SourceDB(path) as src:
            t = src.read_schema(workers=1).tables[0]
        assert t.rows == 3000, shape
        assert (t.columns[1].census.integer, t.columns[1].census.null) == (3000, 0), shape
        assert (t.columns[2].census.blob, t.columns[2].census.null) == (3000, 0), shape


def test_wal_source_is_counted_on_its_own_connection(make_sqlite):
    path = make_sqlite("CREATE TABLE t (id INTEGER PRIMARY KEY, v REAL);"
                       "INSERT INTO t (v) VALUES (1.5), (9e999), (NULL);")
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    conn.close()
    with SourceDB(path) as src:
        assert not src.shares_snapshot()  # another connection might see a later commit
        t = src.read_schema(workers=4).tables[0]
    assert (t.rows, t.columns[1].census.real, t.columns[1].census.nonfinite, t.columns[1].census.null) == (3, 2, 1, 1)


def test_pieces_are_cut_by_rows_not_by_rowid_values(make_sqlite, monkeypatch):
    """Sparse rowids (the extremes of int64, one id far from the rest) give pieces of equal
    row count that together hold every row once; before, the span of the ids set the
    number of pieces (2**64 / 2**30 of them)."""
    monkeypatch.setattr(sqlite_source, "SPLIT_MIN_ROWS", 4)
    ids = [-2**63, -5] + list(range(1, 40)) + [2**62, 2**63 - 1]
    path = make_sqlite("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);",
                       params=[("INSERT INTO t VALUES (?, ?)", [(i, str(i)) for i in ids])])
    with SourceDB(path) as src:
        t = src.read_schema(workers=3).tables[0]
        assert (t.rows, t.columns[0].census.integer) == (43, 43)
        pieces = src.ranges(t, 3)
        got = [[r[0] for b in src.rows(t, rowids=p) for r in b] for p in pieces]
    assert len(pieces) == 3 and [len(g) for g in got] == [14, 14, 15]
    assert sum(got, []) == sorted(ids)
    monkeypatch.setattr(sqlite_source, "PIECE_MAX_ROWS", 10)  # the cap on a piece's rows holds too
    with SourceDB(path) as src:
        pieces = src.ranges(t, 2)
        assert len(pieces) == 5
        assert max(len([r for b in src.rows(t, rowids=p) for r in b]) for p in pieces) <= 10
