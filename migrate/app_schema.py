"""The application's own schema instead of the derived one.

``--schema FILE.sql`` (the app's PostgreSQL DDL, with unqualified names) or
``--schema-from module:attribute`` (SQLAlchemy/SQLModel MetaData, or anything with a
``.metadata``). The DDL is created as it is (keys, indexes, foreign keys included);
source tables and columns are then bound to it by name, and values are converted
to the app's column types. Differences are reported: an extra target column that
may be NULL or has a default is fine; a source column with no target column is an
error unless dropped with ``--drop-column TABLE.COLUMN``.
"""
from __future__ import annotations

import hashlib
import importlib
import re
import sys

import structlog

from .errors import ConflictError, UsageError
from .postgres_target import Target
from .schema import Schema, q

log = structlog.get_logger()

# PostgreSQL column type (udt_name) -> the converter types.py uses; None: refused, with why
UDT_TYPES: dict[str, str | None] = {
    "int8": "bigint", "int4": "integer", "int2": "smallint", "numeric": "numeric", "float8": "double precision",
    "text": "text", "varchar": "text", "bool": "boolean", "date": "date", "timestamp": "timestamp",
    "timestamptz": "timestamptz", "json": "json", "jsonb": "jsonb", "bytea": "bytea", "uuid": "uuid",
}
REFUSED = {
    "float4": "real (float4) would narrow double-precision values; use double precision",
    "bpchar": "char(n) pads values with spaces; use varchar(n) or text",
}


def load_ddl(schema_file: str | None, schema_from: str | None) -> str:
    if schema_file:
        try:
            with open(schema_file, encoding="utf-8") as f:
                return f.read()
        except OSError as e:
            raise UsageError(f"--schema {schema_file!r}: {e.strerror}") from None
    module_name, _, attr = (schema_from or "").partition(":")
    if not module_name or not attr:
        raise UsageError(f"--schema-from {schema_from!r}: expected module:attribute")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise UsageError(f"--schema-from {schema_from!r}: {e}") from None
    metadata = getattr(obj, "metadata", obj)
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateIndex, CreateTable
    if not hasattr(metadata, "sorted_tables"):
        raise UsageError(f"--schema-from {schema_from!r}: not SQLAlchemy MetaData (nor has .metadata)")
    dialect = postgresql.dialect()
    statements = []
    for table in metadata.sorted_tables:
        statements.append(str(CreateTable(table).compile(dialect=dialect)).strip())
        statements += [str(CreateIndex(ix).compile(dialect=dialect)).strip() for ix in table.indexes]
    return ";\n".join(statements) + ";\n"


_CREATE = re.compile(r'CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)', re.I)


def table_names(ddl: str) -> list[str]:
    names = []
    for raw in _CREATE.findall(ddl):
        names.append(raw[1:-1].replace('""', '"') if raw.startswith('"') else raw.lower())
    return names


def ddl_hash(ddl: str) -> str:
    return "app:" + hashlib.sha256(ddl.encode()).hexdigest()[:16]


def apply(ddl: str, target: Target, *, replace: bool, restart: bool) -> dict:
    """Create the app's tables unless this tool already created them from this DDL."""
    names = table_names(ddl)
    if not names:
        raise UsageError("the application's schema creates no table (CREATE TABLE ...)")
    conn = target.connect()
    try:
        target.ensure_state(conn)
        state = target.state(conn)
        existing = target.existing_tables(conn) & set(names)
        foreign = [n for n in existing if n not in state]
        changed = [n for n in existing if n in state and state[n]["definition"] != ddl_hash(ddl)]
        if foreign and not replace:
            raise ConflictError(f"target schema {target.schema!r} already holds table(s) this tool did not create: "
                                + ", ".join(sorted(foreign)), hint="use --replace, or --target-schema")
        if changed and not (restart or replace):
            raise ConflictError("target table(s) were created from a different version of the application's "
                                "schema: " + ", ".join(sorted(changed)), hint="use --restart to recreate them")
        if existing and not foreign and not changed and not restart and len(existing) == len(names):
            return {n: "kept" for n in names}
        with conn.cursor() as cur:
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {q(target.schema)}")
            for n in existing:
                cur.execute(f"DROP TABLE IF EXISTS {target.qualified(n)} CASCADE")
            cur.execute(f"SET LOCAL search_path TO {q(target.schema)}")
            cur.execute(ddl)
            for n in names:
                target.set_state(cur, n, definition=ddl_hash(ddl), status="created")
        conn.commit()
        log.info("application schema created", tables=names)
        return {n: "created" for n in names}
    finally:
        conn.close()


def bind(schema: Schema, target: Target, drop_columns: list[str]) -> list[str]:
    """Point every source table and column at the app's table and column, and take the
    app's types. Returns notes; raises UsageError listing every mismatch at once."""
    drops = {tuple(d.rsplit(".", 1)) for d in drop_columns}
    conn = target.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT table_name, column_name, udt_name, is_nullable = 'YES', column_default, "
                        "is_identity = 'YES', character_maximum_length FROM information_schema.columns "
                        "WHERE table_schema = %s ORDER BY table_name, ordinal_position", (target.schema,))
            target_cols: dict[str, dict[str, tuple]] = {}
            for tname, cname, udt, nullable, default, identity, maxlen in cur.fetchall():
                target_cols.setdefault(tname, {})[cname] = (udt, nullable, default, identity, maxlen)
    finally:
        conn.close()
    errors, notes = [], []
    for t in schema.tables:
        cols = target_cols.get(t.name)
        if cols is None:
            errors.append(f"source table {t.name!r} has no table in the application's schema "
                          "(leave it out with --exclude-table)")
            continue
        t.pg_name = t.name
        kept = []
        for c in t.columns:
            if (t.name, c.name) in drops:
                notes.append(f"column {t.name}.{c.name} dropped by --drop-column ({c.census.null} NULL of {t.rows})")
                continue
            spec = cols.get(c.name)
            if spec is None:
                errors.append(f"source column {t.name}.{c.name} has no column in the application's schema "
                              f"(drop it explicitly with --drop-column {t.name}.{c.name})")
                continue
            udt, nullable, _default, _identity, maxlen = spec
            if udt in REFUSED or UDT_TYPES.get(udt) is None:
                errors.append(f"column {t.name}.{c.name}: target type {udt}: "
                              + REFUSED.get(udt, "not supported by migrate"))
                continue
            c.pg_name, c.pg_type, c.max_length = c.name, UDT_TYPES[udt], maxlen
            c.app_notnull = not nullable
            c.type_reason = f"the application's schema: {udt}" + (f"({maxlen})" if maxlen else "")
            kept.append(c)
        t.columns = kept
        names = {c.name for c in kept}
        for cname, (udt, nullable, default, identity, _m) in cols.items():
            if cname in names:
                continue
            if not nullable and default is None and not identity:
                errors.append(f"target column {t.name}.{cname} is NOT NULL without a default and has no source column")
            else:
                notes.append(f"target column {t.name}.{cname} has no source column: "
                             + ("its default applies" if default or identity else "left NULL"))
    if errors:
        raise UsageError("the application's schema does not fit the source:\n  " + "\n  ".join(errors))
    return notes
