"""An independent check of a migration, sharing no code with migrate's own verify:
values are read through each driver's native types and compared one by one,
and keys, NOT NULL, foreign keys, indexes and sequences are read from the catalog
through SQLAlchemy's inspector."""
from __future__ import annotations

import datetime as dt
import json
import math
import sqlite3
import struct
from decimal import Decimal

import sqlalchemy as sa


def _same(src, dst) -> bool:
    if _is_json_col and isinstance(dst, str):  # JSON read as text; SQLite's JSON affinity is NUMERIC
        want = json.loads(src, parse_float=Decimal, parse_int=Decimal) if isinstance(src, str) else \
            Decimal(repr(src)) if isinstance(src, float) else Decimal(src)
        return want == json.loads(dst, parse_float=Decimal, parse_int=Decimal)
    if src is None or dst is None:
        return src is None and dst is None
    if isinstance(dst, memoryview):
        dst = bytes(dst)
    if isinstance(dst, bool):
        word = str(src).strip().lower()
        return (word in ("1", "1.0", "true", "t", "yes", "y", "on") and dst) or \
            (word in ("0", "0.0", "false", "f", "no", "n", "off") and not dst)
    if isinstance(dst, float):
        if isinstance(src, int):
            src = float(src)
        return isinstance(src, float) and (struct.pack(">d", src) == struct.pack(">d", dst)
                                           or (math.isnan(src) and math.isnan(dst)))
    if isinstance(dst, Decimal):
        if isinstance(src, float):
            return (math.isinf(src) and dst.is_infinite() and (src > 0) == (dst > 0)) or (
                math.isfinite(src) and Decimal(repr(src)) == dst)
        return Decimal(str(src).strip()) == dst
    if isinstance(dst, dt.datetime):
        if isinstance(src, int):
            delta = dt.timedelta(milliseconds=src) if abs(src) >= 10**11 else dt.timedelta(seconds=src)
            return dt.datetime(1970, 1, 1) + delta == dst.replace(tzinfo=None)
        if isinstance(src, float):
            s = src / 1000 if abs(src) >= 1e11 else src
            return abs((dt.datetime(1970, 1, 1) + dt.timedelta(seconds=s)) - dst.replace(tzinfo=None)) <= dt.timedelta(microseconds=1)
        parsed = dt.datetime.fromisoformat(src.strip().replace("Z", "+00:00"))
        if parsed.tzinfo:
            parsed = parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return parsed == dst.replace(tzinfo=None)
    if isinstance(dst, dt.date):
        return dt.date.fromisoformat(src.strip()[:10]) == dst
    if isinstance(dst, str) and not isinstance(src, str):
        if isinstance(src, float):
            return repr(src) == dst
        return str(src) == dst
    if isinstance(dst, bytes) and isinstance(src, str):
        return src.encode() == dst
    if isinstance(dst, bytes) and isinstance(src, (int, float)):  # bytea column: numbers as their text
        return (str(src) if isinstance(src, int) else repr(src)).encode() == dst
    return src == dst


_is_json_col = False


def compare(sqlite_path: str, pg_url: str, password: str | None, schema: str = "public",
            skip_tables: tuple = ()) -> list[str]:
    """Returns a list of differences (empty: identical)."""
    global _is_json_col
    problems = []
    src = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    src.text_factory = lambda b: b.decode("utf-8", errors="surrogateescape")
    u = sa.engine.make_url(pg_url).set(drivername="postgresql+psycopg2", password=password)
    eng = sa.create_engine(u, poolclass=sa.pool.NullPool)
    insp = sa.inspect(eng)
    pg_tables = set(insp.get_table_names(schema=schema))
    tables = [r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
                                        "AND sql NOT LIKE 'CREATE VIRTUAL%'") if r[0] not in skip_tables]
    raw = eng.raw_connection()
    cur = raw.cursor()
    cur.execute("SET TimeZone='UTC'")
    for t in tables:
        if t not in pg_tables:
            problems.append(f"{t}: missing in target")
            continue
        cols = [r[1] for r in src.execute(f'PRAGMA table_info("{t}")')]
        pk = [r[1] for r in sorted(src.execute(f'PRAGMA table_info("{t}")'), key=lambda r: r[5]) if r[5]]
        notnull = {r[1] for r in src.execute(f'PRAGMA table_info("{t}")') if r[3]}
        qcols = ", ".join('"' + c.replace('"', '""') + '"' for c in cols)
        srows = src.execute(f'SELECT {qcols} FROM "{t}"').fetchall()
        pg_cols = {c["name"]: c for c in insp.get_columns(t, schema=schema)}
        json_cols = {c for c in cols if str(pg_cols[c]["type"]).upper() in ("JSONB", "JSON")}
        # JSON read as text, so that numbers are compared as the decimals jsonb keeps
        pcols = ", ".join('"' + c.replace('"', '""') + '"' + ("::text" if c in json_cols else "") for c in cols)
        cur.execute(f'SELECT {pcols} FROM "{schema}"."{t}"')
        drows = cur.fetchall()
        if len(srows) != len(drows):
            problems.append(f"{t}: {len(srows)} source rows, {len(drows)} target rows")
            continue
        if pk:
            idx = [cols.index(c) for c in pk]
            key = lambda r: tuple(str(r[i]) for i in idx)  # noqa: E731
            dmap = {key(r): r for r in drows}
            pairs = [(r, dmap.get(key(r))) for r in srows]
        else:
            pairs = list(zip(sorted(srows, key=repr), sorted(drows, key=lambda r: repr(tuple(
                bytes(v) if isinstance(v, memoryview) else v for v in r)))))
        bad = 0
        for s_row, d_row in pairs:
            if d_row is None:
                bad += 1
                continue
            for c, a, b in zip(cols, s_row, d_row):
                _is_json_col = c in json_cols
                try:
                    ok = _same(a, b)
                except Exception:
                    ok = False
                if not ok:
                    bad += 1
                    if bad <= 3:
                        problems.append(f"{t}.{c}: source {a!r} vs target {b!r}")
        if bad > 3:
            problems.append(f"{t}: {bad} differing values in all")
        # keys and constraints
        pk_pg = insp.get_pk_constraint(t, schema=schema)["constrained_columns"]
        if pk and sorted(pk_pg) != sorted(pk):
            problems.append(f"{t}: primary key {pk_pg} in target, {pk} in source")
        for c in notnull:
            if pg_cols[c]["nullable"]:
                problems.append(f"{t}.{c}: NOT NULL lost")
        fks_src = {tuple(r[3] for r in rows) for rows in _group(src.execute(f'PRAGMA foreign_key_list("{t}")'))}
        fks_pg = {tuple(f["constrained_columns"]) for f in insp.get_foreign_keys(t, schema=schema)}
        if fks_src - fks_pg:
            problems.append(f"{t}: foreign keys {fks_src - fks_pg} missing in target")
        idx_pg = {tuple(i["column_names"]) for i in insp.get_indexes(t, schema=schema)} | {tuple(pk_pg)}
        idx_pg |= {tuple(u["column_names"]) for u in insp.get_unique_constraints(t, schema=schema)}
        for (iname, origin) in [(r[1], r[3]) for r in src.execute(f'PRAGMA index_list("{t}")')]:
            icols = tuple(r[2] for r in src.execute(f'PRAGMA index_info("{iname}")'))
            if None not in icols and icols not in idx_pg:
                problems.append(f"{t}: index {iname} {icols} missing in target")
        # a working auto id: the next id is past max(id)
        if len(pk) == 1 and pg_cols[pk[0]]["type"].__class__.__name__ in ("BIGINT", "INTEGER"):
            cur.execute("SELECT pg_get_serial_sequence(%s, %s)", (f'"{schema}"."{t}"', pk[0]))
            seq = cur.fetchone()[0]
            if seq is None:
                problems.append(f"{t}.{pk[0]}: no identity/sequence")
            else:
                cur.execute(f'SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END > '
                            f'coalesce((SELECT max("{pk[0]}") FROM "{schema}"."{t}"), 0) FROM {seq}')
                if not cur.fetchone()[0]:
                    problems.append(f"{t}.{pk[0]}: next id collides with existing rows")
    raw.rollback()
    raw.close()
    src.close()
    return problems


def _group(rows):
    out = {}
    for r in rows:
        out.setdefault(r[0], []).append(r)
    return list(out.values())
