"""Phase: seed admin. Create the application's admin user if absent (idempotent).

The password comes only from MIGRATE_ADMIN_PASSWORD_FILE (a mounted secret) or
MIGRATE_ADMIN_PASSWORD, or is generated into a 0600 file with --generate-password;
there is no default. It is stored as a bcrypt hash and never logged. A row this
phase inserts or changes is recorded in ``_migrate.seeded``, so verification
compares the migrated rows only and a re-run keeps the admin (and its id).
"""
from __future__ import annotations

import os
import secrets

import bcrypt
import structlog

from ..errors import TargetError, UsageError
from ..log import register_secret
from ..postgres_target import STATE_SCHEMA, Target
from ..schema import q

log = structlog.get_logger()

COLUMN_KEYS = ("id", "username", "email", "hashed_password", "full_name", "role", "is_active", "created_at")


def column_map(specs: list[str]) -> dict[str, str]:
    """--admin-column KEY=COLUMN overrides; the defaults match the example app."""
    cols = {k: k for k in COLUMN_KEYS}
    for spec in specs:
        key, sep, col = spec.partition("=")
        if not sep or key not in cols or not col:
            raise UsageError(f"--admin-column {spec!r}: expected KEY=COLUMN with KEY one of {', '.join(COLUMN_KEYS)}")
        cols[key] = col
    return cols


def password(s) -> str:
    pw = s.secrets.get("admin_password")
    if not pw and s.generate_password:
        pw = secrets.token_urlsafe(24)
        try:
            fd = os.open(s.generate_password, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(pw + "\n")
        except OSError as e:
            raise UsageError(f"--generate-password {s.generate_password!r}: {e.strerror}") from None
        register_secret(pw)
        log.info("generated an admin password", file=s.generate_password)
    if not pw:
        raise UsageError("no admin password configured: set MIGRATE_ADMIN_PASSWORD_FILE (a mounted secret) or "
                         "MIGRATE_ADMIN_PASSWORD, or pass --generate-password FILE")
    if len(pw.encode()) > 72:
        raise UsageError("the admin password is longer than 72 bytes, which bcrypt cannot hash")
    if len(pw) < 8:
        raise UsageError("the admin password is shorter than 8 characters")
    return pw


def ensure_state(cur) -> None:
    cur.execute(f"CREATE SCHEMA IF NOT EXISTS {q(STATE_SCHEMA)}")
    cur.execute(f"""CREATE TABLE IF NOT EXISTS {q(STATE_SCHEMA)}.{q('seeded')} (
        target_schema text NOT NULL, table_name text NOT NULL, key text NOT NULL,
        PRIMARY KEY (target_schema, table_name, key))""")


def seeded_keys(cur, target: Target, table_pg: str) -> list[str]:
    cur.execute("SELECT to_regclass(%s)", (f"{q(STATE_SCHEMA)}.{q('seeded')}",))
    if cur.fetchone()[0] is None:
        return []
    cur.execute(f"SELECT key FROM {q(STATE_SCHEMA)}.{q('seeded')} WHERE target_schema = %s AND table_name = %s",
                (target.schema, table_pg))
    return [r[0] for r in cur.fetchall()]


def seed(s, target: Target, conn) -> tuple[int, str]:
    """Returns (admin id, what happened). Runs in the caller's connection, commits."""
    cols = column_map(s.admin_columns)
    table = target.qualified(s.admin_table)
    pw = password(s)
    with conn.cursor() as cur:
        cur.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
                    (target.schema, s.admin_table))
        present = {r[0] for r in cur.fetchall()}
        if not present:
            raise TargetError(f"seed admin: table {s.admin_table!r} does not exist in schema {target.schema!r}",
                              hint="set --admin-table (MIGRATE_ADMIN_TABLE) to the application's user table")
        for key in ("id", "username", "hashed_password"):
            if cols[key] not in present:
                raise TargetError(f"seed admin: table {s.admin_table!r} has no column {cols[key]!r} (for {key})",
                                  hint=f"map it with --admin-column {key}=COLUMN")
        ensure_state(cur)
        hashed = bcrypt.hashpw(pw.encode(), bcrypt.gensalt()).decode()
        values = {"username": s.admin_username, "email": s.admin_email, "full_name": s.admin_full_name,
                  "role": s.admin_role, "is_active": True, "hashed_password": hashed}
        values = {cols[k]: v for k, v in values.items() if cols[k] in present}
        cur.execute(f"SELECT {q(cols['id'])} FROM {table} WHERE {q(cols['username'])} = %s", (s.admin_username,))
        row = cur.fetchone()
        if row is not None and not s.update:
            conn.commit()
            log.info("admin user exists; left alone (use --update to change it)", username=s.admin_username, id=row[0])
            return row[0], "exists"
        if row is not None:
            sets = ", ".join(f"{q(c)} = %s" for c in values)
            cur.execute(f"UPDATE {table} SET {sets} WHERE {q(cols['id'])} = %s", (*values.values(), row[0]))
            admin_id, action = row[0], "updated"
        else:
            # the table was just loaded with explicit ids: its sequence must first move past them
            cur.execute("SELECT pg_get_serial_sequence(%s, %s)", (table, cols["id"]))
            seq = cur.fetchone()[0]
            if seq:
                cur.execute(f"SELECT max({q(cols['id'])}) FROM {table}")
                high = cur.fetchone()[0]
                if high is not None and high >= 1:
                    cur.execute("SELECT setval(%s, greatest(%s, (SELECT CASE WHEN is_called THEN last_value "
                                f"ELSE 0 END FROM {seq})), true)", (seq, high))
            if cols["created_at"] in present:
                values[cols["created_at"]] = None  # placeholder, set in SQL below
            previous = _previous_id(cur, target, s.admin_table)
            names = list(values) + ([cols["id"]] if previous is not None else [])
            params = [v for k, v in values.items() if k != cols["created_at"]]
            exprs = ["(CURRENT_TIMESTAMP AT TIME ZONE 'UTC')" if k == cols["created_at"] else "%s" for k in values]
            if previous is not None:  # a re-run after the user table was reloaded keeps the admin's id
                exprs.append("%s")
                params.append(previous)
            cur.execute(f"INSERT INTO {table} ({', '.join(q(n) for n in names)}) VALUES ({', '.join(exprs)}) "
                        f"RETURNING {q(cols['id'])}", params)
            admin_id, action = cur.fetchone()[0], "created"
        cur.execute(f"INSERT INTO {q(STATE_SCHEMA)}.{q('seeded')} VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (target.schema, s.admin_table, str(admin_id)))
    conn.commit()
    log.info(f"admin user {action}", username=s.admin_username, id=admin_id)
    return admin_id, action


def _previous_id(cur, target: Target, table_pg: str):
    keys = seeded_keys(cur, target, table_pg)
    return int(keys[0]) if keys and keys[0].lstrip("-").isdigit() else None


def run(s, target: Target) -> str:
    """The seed-admin command on its own (takes the run lock)."""
    conn = target.connect()
    try:
        admin_id, action = seed(s, target, conn)
    finally:
        conn.close()
    return f"admin user {s.admin_username!r} {action} (id {admin_id})"
