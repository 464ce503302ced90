"""Property: any SQLite table — every storage class, odd values, any declared type name —
migrates exactly. Checked by migrate's verify, by the independent comparison, and by
reading the backup back."""
import json
import math
import os
import sqlite3
import struct

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from independent import compare
from migrate.codec import decoder
from migrate.types import InvalidText

DECLARED = ["INTEGER", "TEXT", "REAL", "BLOB", "NUMERIC", "", "VARCHAR(10)", "TINYINT UNSIGNED", "int(5)",
            "double precision", "ENUM", "MONEY", "UUID", "NVARCHAR(160)", "DECIMAL(10,2)", "FLOAT", "CLOB", "BIGINT"]

text_no_nul = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=30)
values = st.one_of(
    st.none(),
    st.integers(-2**63, 2**63 - 1),
    st.sampled_from([-2**63, 2**63 - 1, 0, -1, 2**53 + 1]),
    st.floats(allow_nan=False, allow_infinity=True),  # SQLite stores NaN as NULL
    st.sampled_from([-0.0, 5e-324, 1.7976931348623157e308, 0.1, 1e16, 2.800521049256105e16]),
    text_no_nul,
    st.sampled_from(["", " ", "\\", "\t\n\r", "NULL", "\\N", "user", "1e5", "0x10", "2024-01-01T00:00:00Z",
                     "aGVsbG8=", "{\"a\": 1}", "ﬁ", "𝄞"]),
    st.binary(max_size=40),
)


@st.composite
def tables(draw):
    ncols = draw(st.integers(1, 5))
    decl = [draw(st.sampled_from(DECLARED)) for _ in range(ncols)]
    rows = draw(st.lists(st.tuples(*[values] * ncols), max_size=25))
    return decl, rows


def _build(path, decl, rows):
    if os.path.exists(path):
        os.remove(path)
    conn = sqlite3.connect(path)
    cols = ", ".join(f'"c {i}" {d}' for i, d in enumerate(decl))
    conn.execute(f'CREATE TABLE "odd table" (id INTEGER PRIMARY KEY, {cols})')
    marks = ", ".join("?" * len(decl))
    conn.executemany(f'INSERT INTO "odd table" VALUES (NULL, {marks})', rows)
    conn.execute('CREATE TABLE "user" ("order" TEXT, "group" INTEGER)')  # reserved words, no primary key
    conn.executemany('INSERT INTO "user" VALUES (?, ?)', [("select", 1), ("select", 1), (None, None)])
    conn.commit()
    conn.close()


def _same_storage(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack(">d", a) == struct.pack(">d", b) or (math.isnan(a) and math.isnan(b))
    return type(a) is type(b) and a == b


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(tables())
def test_roundtrip_any_table(tmp_path_factory, pgdb, cli, server, table):
    decl, rows = table
    tmp = tmp_path_factory.mktemp("rt")
    src = str(tmp / "src.db")
    _build(src, decl, rows)
    r = cli("run", "--source", src, "--target", pgdb, "--backup-dir", str(tmp / "bk"), "--restart")
    assert r.returncode == 0, r.stderr[-2000:]
    assert compare(src, pgdb, server.password) == []
    # the backup alone holds every value with its own storage class
    m = orjson.loads((tmp / "bk" / "manifest.json").read_bytes())
    t = next(t for t in m["tables"] if t["name"] == "odd table")
    dec = decoder(list(range(len(decl) + 1)))
    backed = [dec(line) for line in (tmp / "bk" / t["file"]).read_bytes().splitlines()]
    conn = sqlite3.connect(src)
    original = conn.execute('SELECT * FROM "odd table" ORDER BY id').fetchall()
    assert len(backed) == len(original)
    for got, want in zip(backed, original):
        assert all(_same_storage(g, w) for g, w in zip(got, want)), (got, want)


def test_nul_and_invalid_utf8_are_kept_as_bytea_when_asked(tmp_path, pgdb, cli, server):
    src = str(tmp_path / "src.db")
    conn = sqlite3.connect(src)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes VALUES (1, 'a' || char(0) || 'b')")
    conn.execute("INSERT INTO notes VALUES (2, CAST(x'ff41' AS TEXT))")
    conn.execute("INSERT INTO notes VALUES (3, 'plain')")
    conn.commit()
    conn.close()
    # default: a precise error, nothing loaded
    r = cli("run", "--source", src, "--target", pgdb, "--backup-dir", str(tmp_path / "bk"))
    assert r.returncode == 5
    assert "table 'notes', row id=1, column 'body'" in r.stderr and "NUL" in r.stderr
    # the backup kept both byte-exact, and marked the invalid one
    m = orjson.loads((tmp_path / "bk" / "manifest.json").read_bytes())
    lines = (tmp_path / "bk" / m["tables"][0]["file"]).read_bytes().splitlines()
    assert orjson.loads(lines[0])[1] == "a\x00b"
    assert orjson.loads(lines[1])[1] == {"$t": "/0E="}
    assert isinstance(decoder([1])(lines[1])[1], InvalidText)
    # asked for bytea: every byte kept
    r = cli("run", "--source", src, "--target", pgdb, "--backup-dir", str(tmp_path / "bk"),
            "--column-type", "notes.body=bytea")
    assert r.returncode == 0, r.stderr
    pg = server.connect(pgdb.rsplit("/", 1)[1])
    cur = pg.cursor()
    cur.execute("SELECT id, body FROM notes ORDER BY id")
    assert [(i, bytes(b)) for i, b in cur.fetchall()] == [(1, b"a\x00b"), (2, b"\xffA"), (3, b"plain")]
    pg.close()


# ---- typed columns: dates in every shape, JSON, booleans, numeric text ------------------
SHAPES = [
    lambda d: d.strftime("%Y-%m-%d %H:%M:%S"),
    lambda d: d.strftime("%Y-%m-%dT%H:%M:%S") + "Z",
    lambda d: d.strftime("%Y-%m-%d %H:%M:%S.%f"),
    lambda d: (d + __import__("datetime").timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "+02:00",
    lambda d: int((d - __import__("datetime").datetime(1970, 1, 1)).total_seconds()) if not d.microsecond else None,
    lambda d: int((d - __import__("datetime").datetime(1970, 1, 1)).total_seconds() * 1000)
    if d.microsecond % 1000 == 0 and d.year >= 1974 else None,
]
json_docs = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=10),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(
        st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=5), c, max_size=4),
    max_leaves=10)
BOOLS = [0, 1, "true", "False", "t", "F", "yes", "NO", "on", "off", "y", "n", "1", "0"]


@st.composite
def typed_rows(draw):
    import datetime as dt
    n = draw(st.integers(1, 20))
    rows = []
    for _ in range(n):
        d = draw(st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(9999, 12, 31)))
        shaped = draw(st.sampled_from(SHAPES))(d)
        doc = draw(json_docs)
        rows.append((shaped if shaped is not None else SHAPES[0](d), d.date().isoformat(),
                     json.dumps(doc, ensure_ascii=draw(st.booleans())),
                     draw(st.sampled_from(BOOLS)),
                     draw(st.decimals(allow_nan=False, allow_infinity=False).map(str))))
    return rows


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(typed_rows())
def test_roundtrip_typed_values(tmp_path_factory, pgdb, cli, server, rows):
    """Every shape converts, and verify proves PostgreSQL holds exactly what was sent;
    the independent check re-derives each value with its own parsers."""
    tmp = tmp_path_factory.mktemp("typed")
    src = str(tmp / "src.db")
    conn = sqlite3.connect(src)
    conn.execute("CREATE TABLE ev (id INTEGER PRIMARY KEY, at DATETIME, day DATE, doc JSON, flag BOOLEAN, "
                 "amount NUMERIC)")
    conn.executemany("INSERT INTO ev (at, day, doc, flag, amount) VALUES (?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    r = cli("run", "--source", src, "--target", pgdb, "--backup-dir", str(tmp / "bk"), "--restart")
    assert r.returncode == 0, r.stderr[-2000:]
    assert compare(src, pgdb, server.password) == []



@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.binary(max_size=30) | st.text(max_size=20).map(lambda s: s.encode("utf-8", "surrogatepass")),
                min_size=1, max_size=15))
def test_roundtrip_nul_and_invalid_utf8_text_as_bytea(tmp_path_factory, pgdb, cli, server, texts):
    """TEXT holding any bytes (NUL, invalid UTF-8): every byte survives into bytea when asked."""
    tmp = tmp_path_factory.mktemp("bytes")
    src = str(tmp / "src.db")
    conn = sqlite3.connect(src)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.executemany("INSERT INTO notes (body) VALUES (CAST(? AS TEXT))", [(t,) for t in texts])
    conn.commit()
    conn.close()
    r = cli("run", "--source", src, "--target", pgdb, "--backup-dir", str(tmp / "bk"), "--restart",
            "--column-type", "notes.body=bytea")
    assert r.returncode == 0, r.stderr[-2000:]
    pg = server.connect(pgdb.rsplit("/", 1)[1])
    cur = pg.cursor()
    cur.execute("SELECT body FROM notes ORDER BY id")
    assert [bytes(b) for (b,) in cur.fetchall()] == texts
    pg.close()
