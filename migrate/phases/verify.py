"""Phase: verify. Per table: row count and content checksum, computed the same way on
both sides, plus working sequences; down to row keys when a checksum differs.

Expected side (Python): the sum over rows of md5(COPY line) — from the backup's
manifest (computed while the backup was written) or recomputed from the source.
Target side (SQL): PostgreSQL renders every stored row back into the same line
(``types.row_hash_sql``) and sums the same hashes. Equal sums mean PostgreSQL
holds exactly the values that were sent, bit for bit for floats.
"""
from __future__ import annotations

import contextvars
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import structlog

from ..codec import decoder
from ..convert import RowConverter
from ..errors import BackupError
from ..postgres_target import Target, classify
from ..schema import Schema, Table, q
from ..sqlite_source import NeedsMarking, SourceDB
from ..types import field_sql, fold, row_hash_sql
from .backup import open_table_file
from .init_schema import has_identity
from .seed_admin import seeded_keys

log = structlog.get_logger()
DIFF_MAX_ROWS = 2_000_000  # above this, a checksum mismatch is reported without row keys
DIFF_SHOW = 10


def expected_from_source(src: SourceDB, t: Table, limit: int | None = None) -> None:
    """Fill t.rows / t.checksum / t.conversion_errors by converting the source rows."""
    for marking in (False, True):
        try:
            conv = RowConverter(t)
            rows = total = 0
            errors: list = []
            for batch in src.rows(t, limit=limit, marking=marking):
                total += conv.converted(batch, rows, errors)[1]
                rows += len(batch)
            t.rows, t.checksum, t.conversion_errors = rows, fold(total), len(errors)
            return
        except NeedsMarking:
            continue


def _expected_lines(t: Table, backup_dir: str | None, src: SourceDB | None, conv: RowConverter | None = None):
    """Every converted line of the expected side (for the row-level diff)."""
    conv = conv or RowConverter(t)
    errors: list = []
    if backup_dir:
        marked = [i for i, c in enumerate(t.columns) if c.census.blob or c.census.nonfinite or c.census.invalid_utf8]
        decode = decoder(marked)
        with open_table_file(os.path.join(backup_dir, t.file)) as f:
            batch = []
            for raw in f:
                batch.append(decode(raw))
                if len(batch) >= 5000:
                    yield from conv.lines(batch, 0, errors)
                    batch = []
            yield from conv.lines(batch, 0, errors)
    else:
        for marking in (False, True):
            try:
                for batch in src.rows(t, marking=marking):
                    yield from conv.lines(batch, 0, errors)
                return
            except NeedsMarking:
                continue


def _diff(cur, target: Target, t: Table, backup_dir, src) -> list[str]:
    pk_idx = [t.columns.index(c) for c in t.pk]
    cols = [(q(c.pg_name), c.pg_type) for c in t.columns]
    key_sql = " || E'\\t' || ".join(field_sql(q(c.pg_name), c.pg_type) for c in t.pk)
    cur.execute(f"SELECT {key_sql}, {row_hash_sql(cols)} FROM {target.qualified(t.pg_name)}")
    actual = dict(cur.fetchall())
    missing, changed = [], []
    conv = RowConverter(t)
    for line in _expected_lines(t, backup_dir, src):
        fields = line.split("\t")
        key = "\t".join(fields[i] for i in pk_idx)
        h = actual.pop(key, None)
        if h is None:
            missing.append(key)
        elif h != conv.hash(line):
            changed.append(key)
    names = ", ".join(c.name for c in t.pk)
    out = []
    for label, keys in (("missing from target", missing), ("different in target", changed),
                        ("only in target", list(actual))):
        if keys:
            shown = "; ".join(f"({k.replace(chr(9), ', ')})" for k in keys[:DIFF_SHOW])
            out.append(f"{len(keys)} row(s) {label}, key ({names}): {shown}{' ...' if len(keys) > DIFF_SHOW else ''}")
    return out


def orphans(cur, target: Target, child: Table, parent: Table, pairs, limit: int = 5) -> tuple[int, list[str], list]:
    """Rows of child whose non-NULL key has no row in parent: (count, key columns, sample keys)."""
    notnull = " AND ".join(f"c.{q(a.pg_name)} IS NOT NULL" for a, _ in pairs)
    match = " AND ".join(f"p.{q(b.pg_name)} = c.{q(a.pg_name)}" for a, b in pairs)
    key_cols = [c.pg_name for c in child.pk] or [a.pg_name for a, _ in pairs]
    cur.execute(f"SELECT count(*) OVER (), {', '.join('c.' + q(k) for k in key_cols)} "
                f"FROM {target.qualified(child.pg_name)} c WHERE {notnull} AND NOT EXISTS "
                f"(SELECT 1 FROM {target.qualified(parent.pg_name)} p WHERE {match}) LIMIT {int(limit)}")
    rows = cur.fetchall()
    return (rows[0][0] if rows else 0), key_cols, [r[1:] for r in rows]


def enforced(cur, target: Target, child: Table, parent: Table, pairs) -> bool:
    """Whether the target holds a validated foreign key on exactly these column pairs:
    PostgreSQL then guarantees there is no orphan (MATCH SIMPLE, as orphans() counts)."""
    cur.execute("SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE contype = 'f' AND convalidated "
                "AND conrelid = to_regclass(%s) AND confrelid = to_regclass(%s) "
                "AND conkey = ARRAY(SELECT attnum FROM unnest(%s::text[]) WITH ORDINALITY u(name, i) "
                "JOIN pg_attribute ON attrelid = conrelid AND attname = name ORDER BY i)::int2[] "
                "AND confkey = ARRAY(SELECT attnum FROM unnest(%s::text[]) WITH ORDINALITY u(name, i) "
                "JOIN pg_attribute ON attrelid = confrelid AND attname = name ORDER BY i)::int2[])",
                (target.qualified(child.pg_name), target.qualified(parent.pg_name),
                 [a.pg_name for a, _ in pairs], [b.pg_name for _, b in pairs]))
    return cur.fetchone()[0]


def fk_pairs(t: Table, fk, by_name: dict):
    """(parent, [(child column, parent column)]) for a foreign key, or None when it cannot be resolved."""
    parent = by_name.get(fk.ref_table)
    if parent is None:
        return None
    ref = fk.ref_columns if all(fk.ref_columns) else [c.name for c in parent.pk]
    if len(ref) != len(fk.columns):
        return None
    try:
        return parent, [(t.column(a), parent.column(b)) for a, b in zip(fk.columns, ref)]
    except KeyError:
        return None


def _not_seeded(t: Table, seeded: list[str]) -> tuple[str, list]:
    """WHERE clause leaving out the rows seed-admin added or changed (single-column keys)."""
    if not seeded or len(t.pk) != 1:
        return "", []
    return f" WHERE {q(t.pk[0].pg_name)}::text <> ALL(%s)", [seeded]


def fingerprint(cur, target: Target, t: Table, seeded: list[str] | None = None) -> tuple[int, str]:
    """(row count, content checksum) of a target table, computed by PostgreSQL."""
    cols = [(q(c.pg_name), c.pg_type) for c in t.columns]
    where, params = _not_seeded(t, seeded or [])
    cur.execute(f"SELECT count(*), coalesce(sum({row_hash_sql(cols)}), 0) FROM {target.qualified(t.pg_name)}{where}",
                params)
    n, total = cur.fetchone()
    return n, fold(int(total))


def expected_with(t: Table, backup_dir: str, fills: dict | None, seeded: list[str]) -> None:
    """Recompute the expected side from the backup with the run's fill rules applied and
    the seeded keys left out (only for tables that have either)."""
    conv = RowConverter(t, fills)
    pk = t.columns.index(t.pk[0]) if len(t.pk) == 1 else None
    skip = set(seeded)
    rows = total = 0
    for line in _expected_lines(t, backup_dir, None, conv):
        if pk is not None and skip and line.split("\t")[pk] in skip:
            continue
        rows += 1
        total += conv.hash(line)
    t.rows, t.checksum = rows + t.conversion_errors, fold(total)


def verify_table(cur, target: Target, t: Table, backup_dir: str | None = None,
                 src: SourceDB | None = None, fills: dict | None = None, derived: bool = True,
                 by_name: dict | None = None) -> dict:
    start = time.monotonic()
    expected_rows = t.rows - t.conversion_errors
    res = {"table": t.name, "pg_name": t.pg_name, "source_rows": t.rows, "expected_rows": expected_rows,
           "target_rows": None, "expected_checksum": t.checksum, "target_checksum": None,
           "verdict": "ok", "problems": []}
    cur.execute("SELECT to_regclass(%s)", (target.qualified(t.pg_name),))
    if cur.fetchone()[0] is None:
        res["verdict"] = "missing"
        res["problems"].append(f"table {t.pg_name!r} does not exist in schema {target.schema!r}")
        return res
    seeded = seeded_keys(cur, target, t.pg_name)
    if (fills or seeded or t.checksum_types != t.types_signature()) and backup_dir:
        expected_with(t, backup_dir, fills, seeded)
        res["expected_rows"] = expected_rows = t.rows - t.conversion_errors
        res["expected_checksum"] = t.checksum
    n, res["target_checksum"] = fingerprint(cur, target, t, seeded)
    res["target_rows"] = n
    if seeded:  # the summary shows what is there; the comparison leaves the seeded rows out
        cur.execute(f"SELECT count(*) FROM {target.qualified(t.pg_name)}")
        res["target_rows"] = cur.fetchone()[0]
        res["seeded_rows"] = res["target_rows"] - n
    if n != expected_rows:
        res["verdict"] = "count differs"
        res["problems"].append(f"{n} rows in target, {expected_rows} expected")
    elif res["target_checksum"] != t.checksum:
        res["verdict"] = "checksum differs"
        res["problems"].append(f"content checksum {res['target_checksum']} in target, {t.checksum} expected")
    if res["verdict"] != "ok" and t.pk and t.rows <= DIFF_MAX_ROWS and (backup_dir or src):
        res["problems"] += _diff(cur, target, t, backup_dir, src)
    cur.execute("SELECT a.attname, pg_get_serial_sequence(%s, a.attname) FROM pg_attribute a "
                "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped",
                (target.qualified(t.pg_name), target.qualified(t.pg_name)))
    sequences = {col: seq for col, seq in cur.fetchall() if seq}
    if derived and has_identity(t) and t.pk[0].pg_name not in sequences:
        res["problems"].append(f"column {t.pk[0].name!r} has no identity sequence")
        res["verdict"] = "sequence"
    for col, seq in sequences.items():
        cur.execute(f"SELECT (SELECT max({q(col)}) FROM {target.qualified(t.pg_name)}), "
                    f"CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM {seq}")
        mx, nxt = cur.fetchone()
        if mx is not None and nxt <= mx:
            res["problems"].append(f"sequence {seq} would hand out {nxt}, but max({col}) is {mx}")
            if res["verdict"] == "ok":
                res["verdict"] = "sequence"
    # orphans are reported, not counted as a difference: SQLite let the source hold them too
    for fk in (t.foreign_keys if derived and res["target_rows"] is not None else []):
        resolved = fk_pairs(t, fk, by_name or {})
        if resolved and not enforced(cur, target, t, *resolved):
            n, key_cols, sample = orphans(cur, target, t, resolved[0], resolved[1])
            if n:
                res.setdefault("orphans", {})[f"({', '.join(fk.columns)}) -> {fk.ref_table}"] = n
                res["problems"].append(f"{n} orphan row(s) for foreign key ({', '.join(fk.columns)}) -> "
                                       f"{fk.ref_table!r}, e.g. {key_cols} = {sample[:3]}")
    res["seconds"] = round(time.monotonic() - start, 3)
    return res


def run(schema: Schema, target: Target, *, backup_dir: str | None = None, src: SourceDB | None = None,
        fills_for=None, workers: int = 1) -> list[dict]:
    """Every table, reported in restore order; with workers > 1 (and no SQLite source to read:
    one connection cannot serve threads) several tables at once, biggest first, each on a
    connection of its own (PostgreSQL computes the checksums; psycopg2 waits without the GIL)."""
    if backup_dir is None and src is None:
        raise BackupError("verify needs --source or --backup-dir for the expected side")
    by_name = {x.name: x for x in schema.tables}
    local, opened = threading.local(), []

    def one(t: Table) -> dict:
        if not hasattr(local, "conn"):
            local.conn = target.connect()
            local.conn.autocommit = True
            opened.append(local.conn)
        structlog.contextvars.bind_contextvars(table=t.name)
        try:
            with local.conn.cursor() as cur:
                r = verify_table(cur, target, t, backup_dir, src, fills_for(t) if fills_for else None,
                                 derived=schema.app_ddl is None, by_name=by_name)
        except psycopg2.Error as e:
            raise classify(e, f"verify of table {t.name!r}") from None
        finally:
            structlog.contextvars.unbind_contextvars("table")
        log.info("table verified", table=t.name, verdict=r["verdict"], rows=r["target_rows"])
        return r
    order = schema.restore_order()
    try:
        if workers > 1 and src is None and len(order) > 1:
            context = contextvars.copy_context()  # the job's log fields (command, phase), in every thread
            biggest_first = sorted(order, key=lambda t: -t.rows)
            with ThreadPoolExecutor(workers) as pool:
                done = dict(zip(map(id, biggest_first), pool.map(lambda t: context.copy().run(one, t), biggest_first)))
            return [done[id(t)] for t in order]
        return [one(t) for t in order]
    finally:
        for conn in opened:
            conn.close()
