"""Reading SQLite: open read-only, one consistent snapshot, schema, census, rows.

The source is never written: it is opened with ``mode=ro`` and every read of a
run happens inside one read transaction (so WAL content is included and a
writer cannot tear the snapshot).
"""
from __future__ import annotations

import os
import re
import sqlite3
import stat
import urllib.parse
from typing import Iterator

from .errors import SourceError
from .schema import Column, ForeignKey, Index, Schema, Skipped, Table, q
from .types import Census, InvalidText, declared_to_pg

BATCH = 1000  # rows per fetch: a batch at a time is what a worker holds (about 8 KB a row at peak)
BUSY_TIMEOUT_S = 30.0
SPLIT_MIN_ROWS = 100_000  # a table of this many rows is read in pieces when workers > 1
PIECE_MAX_ROWS = 2**30  # no piece of a table is bigger, however few the workers
CENSUS_CHUNK_MAX = 2**20  # the census counts at most this many rows per query (its fields allow fewer)
ROWID_NAMES = ("rowid", "_rowid_", "oid")  # SQLite's names for the rowid, unless a column takes one
# SQLite's own bookkeeping: never application data
INTERNAL_PREFIX = "sqlite_"


def source_path(source: str) -> str:
    """Accept a path or a sqlite:/// URL (sqlite:///rel/path, sqlite:////abs/path)."""
    if source.startswith("sqlite:"):
        rest = source[len("sqlite:"):]
        if not rest.startswith("///"):
            raise SourceError(f"source URL {source!r}: expected sqlite:///relative/path or sqlite:////absolute/path")
        return urllib.parse.unquote(rest[3:])
    return source


def _check_file(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SourceError(f"source {path!r}: no such file") from None
    except PermissionError:
        raise SourceError(f"source {path!r}: permission denied (a directory on its path is not "
                          f"accessible to uid {os.getuid()})") from None
    except OSError as e:
        raise SourceError(f"source {path!r}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise SourceError(f"source {path!r}: is a directory, not a SQLite file")
    if st.st_size == 0:
        raise SourceError(f"source {path!r}: empty file (0 bytes), not a SQLite database")
    try:
        with open(path, "rb") as f:
            header = f.read(16)
    except PermissionError:
        raise SourceError(f"source {path!r}: permission denied (not readable by uid {os.getuid()})") from None
    except OSError as e:
        raise SourceError(f"source {path!r}: {e.strerror}") from None
    if header != b"SQLite format 3\x00":
        raise SourceError(f"source {path!r}: not a SQLite database (bad header)")


def _invalid_utf8(b) -> int:
    try:
        bytes(b).decode("utf-8")
        return 0
    except UnicodeDecodeError:
        return 1


def _decode_marking(b: bytes):
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return InvalidText(b)


class SourceDB:
    """One read-only connection holding one read snapshot for its whole life."""

    def __init__(self, source: str, busy_timeout_s: float = BUSY_TIMEOUT_S):
        self.path = source_path(source)
        self.busy_timeout_s = busy_timeout_s
        _check_file(self.path)
        self.uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
        self.conn = self.connect_again()

    def error(self, e: Exception, where: str = "") -> SourceError:
        msg = str(e)
        if "locked" in msg or "busy" in msg:
            reason = f"database is locked by another process (waited {self.busy_timeout_s:g} s)"
        elif "not a database" in msg or "malformed" in msg or "corrupt" in msg:
            reason = f"corrupt or not a SQLite database ({msg})"
        else:
            reason = msg
        return SourceError(f"source {self.path!r}{' ' + where if where else ''}: {reason}")

    def close(self) -> None:
        try:
            self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def query(self, sql: str, params=(), where: str = "") -> list:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as e:
            raise self.error(e, where) from None

    def quick_check(self, conn=None) -> None:
        """PRAGMA quick_check: every b-tree page's structure (0.3 s for 200 MB). A damaged
        file is refused before anything is written anywhere, even for pages a table scan
        would skip."""
        try:
            problems = [r[0] for r in (conn or self.conn).execute("PRAGMA main.quick_check(5)").fetchall()]
        except sqlite3.DatabaseError as e:
            raise self.error(e) from None
        if problems != ["ok"]:
            raise SourceError(f"source {self.path!r}: corrupt or not a SQLite database "
                              f"(quick_check: {'; '.join(problems)[:300]})",
                              hint="restore the file from a good copy, or try `sqlite3 FILE .recover`")

    def _quick_check_meanwhile(self):
        """quick_check on a connection of its own, in a thread (SQLite runs without the GIL);
        returns a function that waits for it and raises what it found."""
        import threading
        found: list = []

        def work():
            try:
                conn = self.connect_again()
                try:
                    self.quick_check(conn)
                finally:
                    conn.close()
            except SourceError as e:
                found.append(e)
        th = threading.Thread(target=work, daemon=True)
        th.start()

        def wait() -> None:
            th.join()
            if found:
                raise found[0]
        return wait

    # -- schema ------------------------------------------------------------
    def read_schema(self, census: bool = True, utf8_check: bool = False, workers: int = 1) -> Schema:
        """The schema and (census) the census. With workers > 1 quick_check runs meanwhile;
        its finding comes first, whatever the reading met."""
        if workers > 1:
            checked = self._quick_check_meanwhile()
        else:
            self.quick_check()
            checked = lambda: None  # noqa: E731
        try:
            schema = self._read_schema(census, utf8_check, workers)
        except SourceError:
            checked()  # a damaged file: quick_check's words for it
            raise
        checked()
        return schema

    def _read_schema(self, census: bool, utf8_check: bool, workers: int) -> Schema:
        rows = self.query("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid")
        kinds = {name: (typ, wr) for _, name, typ, _, wr, _ in
                 self.query("PRAGMA main.table_list")}
        sequences = {}
        if any(name == "sqlite_sequence" for _, name, _, _ in rows):
            sequences = dict(self.query("SELECT name, seq FROM sqlite_sequence"))
        schema = Schema(tables=[], user_version=self.query("PRAGMA user_version")[0][0],
                        ddl=[sql for _, _, _, sql in rows if sql])
        virtual = [name for typ, name, _, sql in rows if typ == "table" and (sql or "").upper().startswith("CREATE VIRTUAL")]
        for typ, name, _tbl, sql in rows:
            if typ == "table":
                kind = kinds.get(name, ("table", 0))[0]
                if name.startswith(INTERNAL_PREFIX):
                    schema.skipped.append(Skipped(name, "table", "SQLite internal table"))
                elif kind == "shadow":
                    schema.skipped.append(Skipped(name, "table", "internal storage of a virtual table"))
                elif name in virtual:
                    self._virtual(schema, name, sql or "")
                else:
                    schema.tables.append(self._table(name, sql or "", bool(kinds.get(name, ("", 0))[1]),
                                                     sequences.get(name)))
            elif typ in ("view", "trigger"):
                schema.skipped.append(Skipped(name, typ, f"SQLite {typ} SQL is not translated; recreate it by hand"))
        if census:
            self.census_all(schema.tables, utf8_check, workers)
        return schema

    def _virtual(self, schema: Schema, name: str, sql: str) -> None:
        """FTS, R*Tree and other virtual tables: their rows are data when plain SQLite can
        read them (migrated as a plain table); their shadow tables are index internals."""
        module = re.search(r"USING\s+(\w+)", sql, re.I)
        module = module.group(1).lower() if module else "?"
        try:
            self.conn.execute(f"SELECT * FROM main.{q(name)} LIMIT 0")
        except sqlite3.DatabaseError as e:
            schema.skipped.append(Skipped(name, "virtual table", f"module {module} cannot be read by plain SQLite "
                                                                 f"({e}); its rows are not migrated"))
            return
        t = self._table(name, sql, False, None)
        t.rowid = None  # a virtual table's rowid need not be stable or ordered
        t.notes.append(f"virtual table ({module}) migrated as a plain table of its columns; "
                       "its index (shadow tables) is not")
        schema.tables.append(t)

    def _table(self, name: str, sql: str, without_rowid: bool, seq) -> Table:
        where = f"table {name!r}"
        cols = []
        notes = []
        xinfo = self.query(f"PRAGMA main.table_xinfo({q(name)})", where=where)
        for cid, cname, ctype, notnull, dflt, pk, hidden in xinfo:
            if hidden in (2, 3):
                notes.append(f"generated column {cname!r} ({'stored' if hidden == 3 else 'virtual'}) not copied: "
                             "SQLite computes it; recreate it as a PostgreSQL generated column if the app needs it")
                continue
            if hidden == 1:
                continue  # a virtual table's hidden column (e.g. FTS5's rank): not data
            cols.append(Column(name=cname, declared=ctype or "", notnull=bool(notnull), default=dflt, pk=pk))
        if re.search(r"\bCHECK\s*\(", sql, re.I):
            notes.append("CHECK constraint(s) not translated: SQLite expressions are not PostgreSQL's")
        t = Table(name=name, columns=cols, without_rowid=without_rowid, sql=sql,
                  autoincrement_seq=seq, notes=notes)
        taken = {r[1].lower() for r in xinfo}  # hidden and generated columns shadow the rowid too
        t.rowid = None if without_rowid else next((n for n in ROWID_NAMES if n not in taken), None)
        for _, iname, unique, origin, partial in self.query(f"PRAGMA main.index_list({q(name)})", where=where):
            keys = [r for r in self.query(f"PRAGMA main.index_xinfo({q(iname)})", where=where) if r[5]]
            idx_sql = self.query("SELECT sql FROM sqlite_master WHERE type='index' AND name=?", (iname,))
            idx = Index(name=iname, columns=[r[2] for r in keys], unique=bool(unique), origin=origin,
                        sql=idx_sql[0][0] if idx_sql else None)
            if any(r[1] == -2 for r in keys):
                idx.skipped = "expression index: SQLite expressions are not translated"
            elif partial:
                idx.skipped = "partial index: its WHERE clause is not translated"
            elif any(r[4] and r[4].upper() != "BINARY" for r in keys):
                idx.skipped = "index with COLLATE " + ",".join(sorted({r[4] for r in keys if r[4].upper() != 'BINARY'})) \
                              + ": no faithful PostgreSQL equivalent for a plain index"
            if origin == "pk":
                continue  # the primary key is rebuilt from the columns' pk positions
            t.indexes.append(idx)
        fks: dict[int, ForeignKey] = {}
        for fid, _seq, parent, frm, to, on_update, on_delete, _match in self.query(
                f"PRAGMA main.foreign_key_list({q(name)})", where=where):
            fk = fks.setdefault(fid, ForeignKey([], parent, [], on_update, on_delete))
            fk.columns.append(frm)
            fk.ref_columns.append(to)  # None: the parent's primary key (resolved later)
        t.foreign_keys = [fks[k] for k in sorted(fks)]
        return t

    def census_all(self, tables: list[Table], utf8_check: bool = False, workers: int = 1) -> None:
        """Row count and, per column, how many values of each storage class (typeof()),
        how many REAL infinities and TEXT values holding NUL: one scan per table, in
        SQLite's C code. With workers > 1 and a snapshot other connections share (see
        shares_snapshot), tables and rowid ranges of big tables are counted at once in
        threads (SQLite runs without the GIL). utf8_check also counts TEXT that is not
        UTF-8 (costs a GLOB per value: plan does it; a run finds such values in its
        backup pass, with their row keys)."""
        fields = _census_fields(utf8_check)
        pieces = [(t, r) for t in tables for r in self.ranges(t, workers)]
        if workers > 1 and len(pieces) > 1 and self.shares_snapshot():
            counts = self._in_threads(workers, lambda conn, p: self._census_counts(conn, *p, fields), pieces)
        else:
            counts = [self._census_counts(self.conn, t, r, fields) for t, r in pieces]
        totals: dict[str, list] = {}
        for (t, _), (rows, cols) in zip(pieces, counts):
            acc = totals.setdefault(t.name, [0, [dict.fromkeys(fields, 0) for _ in t.columns]])
            acc[0] += rows
            for a, b in zip(acc[1], cols):
                for k in fields:
                    a[k] += b[k]
        for t in tables:
            t.rows, cols = totals[t.name]
            for c, n in zip(t.columns, cols):
                c.census = Census(null=t.rows - n["integer"] - n["real"] - n["text"] - n["blob"], **n)

    def _census_counts(self, conn, t: Table, rowids: tuple[int, int] | None, fields: dict) -> tuple[int, list]:
        """(rows, per column {census field: count}) of a table or of a rowid range of it.

        One typeof() per value: a column's counts are packed into one sum, each in a field
        of `bits` bits (value k adds 2**(bits*k) for the k-th thing it counts towards).
        The fields hold counts up to 2**bits - 1, so the range is counted in chunks of that
        many rows, cut at row positions; a table without a rowid cannot be cut and is
        counted whole, with two fields of 31 bits per sum."""
        where = f"table {t.name!r}"
        names = list(fields)
        per_sum = len(names) if t.rowid else 2
        bits = 63 // per_sum
        groups = [names[k:k + per_sum] for k in range(0, len(names), per_sum)]
        parts = ["count(*)"]
        for c in t.columns:
            parts += [_census_sum(q(c.name), c.declared, {n: fields[n] for n in g}, bits) for g in groups]
        sql = f"SELECT {', '.join(parts)} FROM main.{q(t.name)}"
        if t.rowid:
            sql += f" WHERE {t.rowid} BETWEEN ? AND ?"
            lo, hi = rowids or (-2**63, 2**63 - 1)
            chunks = self._chunks(conn, t, lo, hi, min(2**bits - 1, CENSUS_CHUNK_MAX))
        else:
            chunks = [()]
        rows, cols = 0, [dict.fromkeys(names, 0) for _ in t.columns]
        mask = 2**bits - 1
        try:
            for params in chunks:
                row = conn.execute(sql, params).fetchone()
                if row[0] >= 2**bits:  # only a table without rowid comes in one piece this big
                    raise SourceError(f"source {self.path!r} table {t.name!r}: {row[0]} rows without a rowid; "
                                      f"the census counts at most {2**bits - 1} rows of such a table")
                rows += row[0]
                for i, acc in enumerate(cols):
                    for g, packed in zip(groups, row[1 + i * len(groups): 1 + (i + 1) * len(groups)]):
                        for k, n in enumerate(g):
                            acc[n] += ((packed or 0) >> (bits * k)) & mask
        except sqlite3.DatabaseError as e:
            raise self.error(e, where) from None
        return rows, cols

    def _chunks(self, conn, t: Table, lo: int, hi: int, size: int):
        """(first, last) rowid bounds of consecutive chunks of at most `size` rows within
        [lo, hi]: each cut found by stepping `size` rows on from the last (no data read)."""
        sql = (f"SELECT {t.rowid} FROM main.{q(t.name)} WHERE {t.rowid} BETWEEN ? AND ? "
               f"ORDER BY {t.rowid} LIMIT 1 OFFSET {int(size)}")
        while True:
            cut = conn.execute(sql, (lo, hi)).fetchone()
            if cut is None:
                yield lo, hi
                return
            yield lo, cut[0] - 1
            lo = cut[0]

    def ranges(self, t: Table, n: int) -> list[tuple[int, int] | None]:
        """Rowid ranges splitting a table into about n pieces of equal row count (and none
        of more than PIECE_MAX_ROWS rows); [None] (the whole table) when it has no rowid to
        cut at or is small. Cut at row positions, not rowid values: rowids may be sparse (ids of
        2**62, an id far from the rest) without making pieces uneven or numerous."""
        if not t.rowid:
            return [None]
        where = f"table {t.name!r}"
        rows = self.query(f"SELECT count(*) FROM main.{q(t.name)}", where=where)[0][0]
        pieces = max(n if rows >= SPLIT_MIN_ROWS else 1, -(-rows // PIECE_MAX_ROWS))
        if pieces <= 1:
            return [None]
        cuts = [self.query(f"SELECT {t.rowid} FROM main.{q(t.name)} ORDER BY {t.rowid} LIMIT 1 OFFSET ?",
                           (rows * i // pieces,), where=where)[0][0] for i in range(1, pieces)]
        bounds = [-2**63] + cuts + [2**63]
        return [(a, b - 1) for a, b in zip(bounds, bounds[1:])]

    def shares_snapshot(self) -> bool:
        """Whether a connection opened now reads exactly this one's snapshot: true for a
        rollback-journal database (no writer can commit while our read transaction holds
        its SHARED lock), not for WAL (a writer may have committed since our snapshot)."""
        return self.query("PRAGMA main.journal_mode")[0][0].lower() != "wal"

    def again(self) -> "SourceDB":
        """This source on a connection of its own (only as good as shares_snapshot)."""
        other = object.__new__(SourceDB)
        other.path, other.uri, other.busy_timeout_s = self.path, self.uri, self.busy_timeout_s
        other.conn = self.connect_again()
        return other

    def connect_again(self) -> sqlite3.Connection:
        """A read-only connection in a read transaction; another than self.conn is only as
        good as shares_snapshot."""
        try:
            conn = sqlite3.connect(self.uri, uri=True, isolation_level=None, timeout=self.busy_timeout_s,
                                   check_same_thread=False)
            # SQLite cannot tell valid UTF-8 from invalid: the census asks Python, only
            # for text with a character outside printable ASCII
            conn.create_function("migrate_invalid_utf8", 1, _invalid_utf8, deterministic=True)
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the first read fixes the snapshot
            return conn
        except sqlite3.DatabaseError as e:
            raise self.error(e) from None

    def _in_threads(self, workers: int, fn, items: list) -> list:
        """fn(connection, item) for every item, in threads with a connection each."""
        import threading
        from concurrent.futures import ThreadPoolExecutor
        local, opened = threading.local(), []

        def call(item):
            if not hasattr(local, "conn"):
                local.conn = self.connect_again()
                opened.append(local.conn)
            return fn(local.conn, item)
        try:
            with ThreadPoolExecutor(workers) as pool:
                return list(pool.map(call, items))
        finally:
            for conn in opened:
                conn.close()

    # -- rows --------------------------------------------------------------
    def rows(self, t: Table, limit: int | None = None, marking: bool = False,
             rowids: tuple[int, int] | None = None) -> Iterator[list[tuple]]:
        """Batches of row tuples in key order (those of a rowid range: see ranges). With
        ``marking``, TEXT that is not UTF-8 comes back as InvalidText instead of raising."""
        where = f" WHERE {t.rowid} BETWEEN {int(rowids[0])} AND {int(rowids[1])}" if rowids else ""
        if t.rowid:
            order = f" ORDER BY {t.rowid}"
        elif t.pk and not t.sql.upper().startswith("CREATE VIRTUAL"):
            order = " ORDER BY " + ", ".join(q(c.name) for c in t.pk)
        else:
            order = ""
        sql = f"SELECT {', '.join(q(c.name) for c in t.columns)} FROM main.{q(t.name)}{where}{order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        self.conn.text_factory = _decode_marking if marking else str
        try:
            cur = self.conn.execute(sql)
            while True:
                batch = cur.fetchmany(BATCH)
                if not batch:
                    return
                yield batch
        except sqlite3.OperationalError as e:
            if "decode" in str(e) and not marking:
                raise NeedsMarking() from None
            raise self.error(e, f"table {t.name!r}") from None
        except sqlite3.DatabaseError as e:
            raise self.error(e, f"table {t.name!r}") from None
        finally:
            self.conn.text_factory = str

    def orphans(self, t: Table, fk: ForeignKey, ref_columns: list[str], limit: int = 5) -> tuple[int, list]:
        """Child rows whose non-NULL key has no parent row (SQLite does not enforce FKs)."""
        child = " AND ".join(f"c.{q(a)} IS NOT NULL" for a in fk.columns)
        match = " AND ".join(f"p.{q(b)} = c.{q(a)}" for a, b in zip(fk.columns, ref_columns))
        key = ", ".join(f"c.{q(c.name)}" for c in t.pk) or "c.rowid"
        base = (f"FROM main.{q(t.name)} c WHERE {child} AND NOT EXISTS "
                f"(SELECT 1 FROM main.{q(fk.ref_table)} p WHERE {match})")
        n = self.query(f"SELECT count(*) {base}", where=f"table {t.name!r}")[0][0]
        sample = self.query(f"SELECT {key}, {', '.join('c.' + q(a) for a in fk.columns)} {base} LIMIT {limit}",
                            where=f"table {t.name!r}") if n else []
        return n, sample


def _census_fields(utf8_check: bool) -> dict[str, tuple[str, str | None]]:
    """Census field -> (the storage class it counts, and the condition on such a value
    it also needs, as SQL on {x}, or None)."""
    fields = {"integer": ("integer", None), "real": ("real", None),
              # +x: no column affinity, so the text 'Inf' in a TEXT column is no infinity
              "nonfinite": ("real", "+{x} IN (9e999, -9e999)"),
              "text": ("text", None), "text_nul": ("text", "instr(CAST({x} AS BLOB), x'00') > 0"),
              "blob": ("blob", None)}
    if utf8_check:  # SQLite cannot tell valid UTF-8 from invalid: Python is asked, only for text beyond ASCII
        fields["invalid_utf8"] = ("text", "CASE WHEN {x} GLOB '*[^ -~]*' THEN migrate_invalid_utf8(CAST({x} AS BLOB)) "
                                          "ELSE 0 END")
    return fields


_LIKELY_CLASS = {"bigint": "integer", "boolean": "integer", "numeric": "integer", "double precision": "real",
                 "bytea": "blob"}  # any other declared type: text first


def _census_sum(x: str, declared: str, fields: dict, bits: int) -> str:
    """sum(CASE ...) adding 2**(bits*k) for each k-th field a value counts towards. The
    searched form (WHEN typeof(x) = '...'), asking first for the class the declared type
    makes likely: "CASE typeof(x) WHEN" evaluates typeof() once but, measured, does not
    run faster on two threads than on one (1.1x against 2.0x)."""
    branches: dict[str, list[str]] = {}
    for k, (cls, cond) in enumerate(fields.values()):
        weight = 2 ** (bits * k)
        branches.setdefault(cls, []).append(str(weight) if cond is None else f"({cond.format(x=x)}) * {weight}")
    likely = _LIKELY_CLASS.get(declared_to_pg(declared) or "", "text")
    order = sorted(branches, key=lambda cls: cls != likely)
    return "sum(CASE " + " ".join(f"WHEN typeof({x}) = '{cls}' THEN {' + '.join(branches[cls])}"
                                  for cls in order) + " ELSE 0 END)"


class NeedsMarking(Exception):
    """A table holds TEXT that is not UTF-8: read it again with marking=True."""
