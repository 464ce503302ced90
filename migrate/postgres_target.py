"""Talking to the target: connect (waiting for it with tenacity), session settings,
the run lock, the state table that makes re-runs resume, COPY.

Connections are psycopg2 connections handed out by a SQLAlchemy engine (which
also parses and masks the URL); COPY goes through psycopg2's ``copy_expert``.
"""
from __future__ import annotations

import time

import psycopg2
import sqlalchemy as sa
import structlog
from sqlalchemy.pool import NullPool
from tenacity import (RetryError, Retrying, retry_if_exception_type, stop_after_delay,
                      wait_exponential)

from .errors import LockedError, TargetError, TargetUnavailable, Transient, UsageError
from .schema import q

log = structlog.get_logger()

STATE_SCHEMA = "_migrate"
LOCK_NAMESPACE = 0x6D696772  # 'migr': first key of the two-int advisory lock

# the session every connection gets: values render exactly as types.py renders them
SESSION_SETTINGS = (
    "SET DateStyle = 'ISO, YMD'; SET TimeZone = 'UTC'; SET extra_float_digits = 1; "
    "SET bytea_output = 'hex'; SET client_encoding = 'UTF8'; SET standard_conforming_strings = on"
)

TRANSIENT_MARKERS = (
    "connection refused", "could not connect", "the database system is starting up",
    "the database system is shutting down", "server closed the connection", "timeout expired",
    "no route to host", "connection reset", "terminating connection", "could not receive data",
    "could not send data", "the database system is in recovery mode", "name or service not known",
    "temporary failure in name resolution", "connection timed out", "ssl syscall error",
    "invalid socket", "connection not open", "ssl connection has been closed", "administrator command",
)


def mask_url(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


TRANSIENT_ERRORS = (psycopg2.errors.AdminShutdown, psycopg2.errors.SerializationFailure,
                    psycopg2.errors.DeadlockDetected, psycopg2.errors.LockNotAvailable,
                    psycopg2.errors.CannotConnectNow)


def classify(e: Exception, where: str) -> Exception:
    """psycopg2 error -> TargetUnavailable (retry) or TargetError (final)."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    low = str(e).lower()
    if any(m in low for m in TRANSIENT_MARKERS) or isinstance(e, TRANSIENT_ERRORS) or (
            isinstance(e, (psycopg2.OperationalError, psycopg2.InterfaceError)) and "closed" in low):
        return TargetUnavailable(f"{where}: {msg}")
    if "password authentication failed" in low or "no password supplied" in low:
        return TargetError(f"{where}: authentication failed (check the password for this user)")
    if "does not exist" in low and "database" in low:
        return TargetError(f"{where}: {msg}", hint="create the database first, or point --target at an existing one")
    if isinstance(e, psycopg2.errors.InsufficientPrivilege) or "permission denied" in low:
        return TargetError(f"{where}: no privileges: {msg}")
    return TargetError(f"{where}: {msg}")


class Target:
    def __init__(self, url: str, schema: str = "public", *, connect_timeout: int = 10,
                 statement_timeout_s: float = 0, lock_timeout_s: float = 60, retry_s: float = 60,
                 password: str | None = None):
        if not url:
            raise UsageError("no target: give --target or set MIGRATE_TARGET (or DATABASE_URL)")
        try:
            u = sa.engine.make_url(url)
        except Exception:
            raise UsageError(f"target {url!r} is not a database URL (expected postgresql://user@host:port/db)") from None
        if not u.drivername.startswith("postgres"):
            raise UsageError(f"target must be a postgresql:// URL, got {u.drivername}://")
        u = u.set(drivername="postgresql+psycopg2")
        if password and not u.password:
            u = u.set(password=password)
        self.url = u
        self.display = u.set(drivername="postgresql").render_as_string(hide_password=True)
        self.schema = schema
        # no statement waits forever: for a table lock (lock_timeout), or at all (statement_timeout)
        opts = f"-c lock_timeout={int(lock_timeout_s * 1000)}"
        if statement_timeout_s:
            opts += f" -c statement_timeout={int(statement_timeout_s * 1000)}"
        self.engine = sa.create_engine(u, poolclass=NullPool)
        # libpq keyword arguments, as SQLAlchemy's dialect derives them from the URL
        # (query parameters such as sslmode and sslrootcert pass through)
        cargs, self._params = self.engine.dialect.create_connect_args(u)
        self._params.update(connect_timeout=connect_timeout, application_name="migrate")
        self._params["options"] = opts
        self._lock_conn = None
        self._keys: list[tuple[str, bool]] = []
        self._lock_timeout = lock_timeout_s
        self.retry_s = retry_s

    # -- connections -------------------------------------------------------
    def connect(self):
        try:
            conn = psycopg2.connect(**self._params)
        except psycopg2.Error as e:
            raise classify(e, f"target {self.display}") from None
        with conn.cursor() as cur:
            cur.execute(SESSION_SETTINGS)
        conn.commit()
        return conn

    def wait(self, timeout_s: float) -> None:
        """Wait until the target accepts connections (the job may start first)."""
        start = time.monotonic()
        attempt = 0
        try:
            for tr in Retrying(retry=retry_if_exception_type(Transient), stop=stop_after_delay(timeout_s),
                               wait=wait_exponential(multiplier=0.25, max=5), reraise=False):
                with tr:
                    attempt += 1
                    try:
                        conn = self.connect()
                    except TargetUnavailable as e:
                        log.info("waiting for target", target=self.display, attempt=attempt, reason=e.message)
                        raise
                    try:
                        self._check_server(conn)
                    finally:
                        conn.close()
        except RetryError as e:
            last = e.last_attempt.exception()
            raise TargetUnavailable(f"{last.message if hasattr(last, 'message') else last} "
                                    f"(gave up after {time.monotonic() - start:.0f} s, {attempt} attempts)",
                                    hint="is PostgreSQL running and reachable? raise --wait-timeout to wait longer") from None
        log.info("target ready", target=self.display, seconds=round(time.monotonic() - start, 2))

    def _check_server(self, conn) -> None:
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('server_encoding'), current_setting('server_version_num')::int")
            enc, version = cur.fetchone()
        if enc != "UTF8":
            raise TargetError(f"target database encoding is {enc}; migrate needs UTF8 so that every text value survives")
        if version < 120000:
            raise TargetError(f"target PostgreSQL {version}: version 12 or later is needed")

    # -- the run lock ------------------------------------------------------
    def lock(self, timeout_s: float, share: str | None = None) -> None:
        """One migration per target schema: a session advisory lock, released by
        the server when this process's connection ends (so a killed run leaves none).
        One share of a migration split across pods (``run --shares``) holds the schema's
        lock shared with the other shares, and its own share's lock: the shares run at
        once, two pods of one share do not, and a whole run waits for every share."""
        key = f"migrate:{self.schema}"
        self._keys = [(key, share is not None)] + ([(f"{key}:share {share}", False)] if share else [])
        self._lock_conn = self._acquire(self._keys, timeout_s)

    def also_lock(self, name: str, timeout_s: float) -> None:
        """One more exclusive lock on the run lock's session (e.g. the join of shares)."""
        more = [(f"migrate:{self.schema}:{name}", False)]
        self._acquire(more, timeout_s, self._lock_conn)
        self._keys += [k for k in more if k not in self._keys]  # a retried step takes it again

    def _acquire(self, keys: list[tuple[str, bool]], timeout_s: float, conn=None):
        """Take every (key, shared) lock on conn (a new connection by default), or none:
        waits up to timeout_s, then LockedError."""
        conn = conn or self.connect()
        conn.autocommit = True
        deadline = time.monotonic() + timeout_s
        announced = False
        while True:
            taken = []
            with conn.cursor() as cur:
                for key, shared in keys:
                    cur.execute(f"SELECT pg_try_advisory_lock{'_shared' if shared else ''}(%s, hashtext(%s))",
                                (LOCK_NAMESPACE, key))
                    if not cur.fetchone()[0]:
                        break
                    taken.append((key, shared))
                else:
                    return conn
                for k, sh in taken:  # all or none: never sit on half of them while waiting
                    cur.execute(f"SELECT pg_advisory_unlock{'_shared' if sh else ''}(%s, hashtext(%s))",
                                (LOCK_NAMESPACE, k))
                if not announced:
                    cur.execute("SELECT pid FROM pg_locks WHERE locktype='advisory' AND classid=%s "
                                "AND objid=hashtext(%s)::oid AND granted AND pid <> pg_backend_pid()",
                                (LOCK_NAMESPACE, key))
                    holder = cur.fetchone()
                    log.warning("another migration holds the lock; waiting", schema=self.schema, lock=key,
                                holder_pid=holder[0] if holder else None, timeout_s=timeout_s)
                    announced = True
            if time.monotonic() >= deadline:
                if conn is not self._lock_conn:
                    conn.close()
                raise LockedError(f"another migration into schema {self.schema!r} of {self.display} "
                                  f"still holds the lock after {timeout_s:.0f} s ({key})",
                                  hint="wait for it to finish, or raise --lock-timeout")
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))

    def ensure_lock(self) -> None:
        """After a server restart the lock went with the old session: take it again."""
        if self._lock_conn is None:
            return
        try:
            with self._lock_conn.cursor() as cur:
                cur.execute("SELECT 1")
        except psycopg2.Error:
            try:
                self._lock_conn.close()
            except psycopg2.Error:
                pass
            self._lock_conn = None
            log.warning("lost the run lock with the server connection; taking it again")
            self._lock_conn = self._acquire(self._keys, self._lock_timeout)

    def retrying(self, what: str, fn, *args, **kwargs):
        """Run fn, retrying it on transient failures (server restart, serialization
        failure, deadlock) with capped exponential backoff for up to retry_s seconds.
        fn must be safe to repeat: every caller redoes a whole table or step."""
        attempt = 0
        for tr in Retrying(retry=retry_if_exception_type(Transient), stop=stop_after_delay(self.retry_s),
                           wait=wait_exponential(multiplier=0.5, max=10), reraise=True):
            with tr:
                attempt += 1
                if attempt > 1:
                    log.warning(f"retrying {what}", attempt=attempt)
                    self.ensure_lock()
                try:
                    try:
                        return fn(*args, **kwargs)
                    except psycopg2.Error as e:  # anything a phase did not classify itself
                        raise classify(e, what) from None
                except Transient as e:
                    log.warning(f"{what}: transient failure", reason=getattr(e, "message", str(e)), attempt=attempt)
                    raise

    def unlock(self) -> None:
        if self._lock_conn is not None:
            self._lock_conn.close()
            self._lock_conn = None

    # -- state: what this tool created and loaded ----------------------------
    def ddl_lock(self, cur) -> None:
        """Until the transaction ends: the shares of one migration (``run --shares``) create
        the state and target schemas one at a time (CREATE ... IF NOT EXISTS races otherwise)."""
        cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext('migrate:ddl'))", (LOCK_NAMESPACE,))

    def ensure_state(self, conn) -> None:
        with conn.cursor() as cur:
            self.ddl_lock(cur)
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {q(STATE_SCHEMA)}")
            cur.execute(f"""CREATE TABLE IF NOT EXISTS {q(STATE_SCHEMA)}.{q('tables')} (
                target_schema text NOT NULL,
                table_name text NOT NULL,
                definition text NOT NULL,
                status text NOT NULL,
                rows bigint,
                checksum text,
                updated_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (target_schema, table_name))""")
            cur.execute(f"ALTER TABLE {q(STATE_SCHEMA)}.{q('tables')} ADD COLUMN IF NOT EXISTS source text")
            # one row per share of a migration split across pods (run --shares): see shares.py
            cur.execute(f"""CREATE TABLE IF NOT EXISTS {q(STATE_SCHEMA)}.{q('shares')} (
                target_schema text NOT NULL,
                run_id text NOT NULL,
                share int NOT NULL,
                shares int NOT NULL,
                status text NOT NULL,
                source_sha256 text,
                tables jsonb,
                updated_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (target_schema, run_id, share))""")
        conn.commit()

    def state(self, conn) -> dict[str, dict]:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (f"{q(STATE_SCHEMA)}.{q('tables')}",))
            if cur.fetchone()[0] is None:
                return {}
            cur.execute(f"SELECT table_name, definition, status, rows, checksum, source "
                        f"FROM {q(STATE_SCHEMA)}.{q('tables')} WHERE target_schema = %s", (self.schema,))
            return {r[0]: {"definition": r[1], "status": r[2], "rows": r[3], "checksum": r[4], "source": r[5]}
                    for r in cur.fetchall()}

    def set_state(self, cur, table: str, *, definition: str | None = None, status: str,
                  rows: int | None = None, checksum: str | None = None, source: str | None = None) -> None:
        cur.execute(
            f"""INSERT INTO {q(STATE_SCHEMA)}.{q('tables')} AS s
                (target_schema, table_name, definition, status, rows, checksum, source)
                VALUES (%s, %s, coalesce(%s, ''), %s, %s, %s, %s)
                ON CONFLICT (target_schema, table_name) DO UPDATE SET
                  definition = coalesce(%s, s.definition), status = excluded.status,
                  rows = excluded.rows, checksum = excluded.checksum, source = excluded.source,
                  updated_at = now()""",
            (self.schema, table, definition, status, rows, checksum, source, definition))

    def existing_tables(self, conn) -> set[str]:
        with conn.cursor() as cur:
            cur.execute("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')", (self.schema,))
            return {r[0] for r in cur.fetchall()}

    def qualified(self, pg_name: str) -> str:
        return f"{q(self.schema)}.{q(pg_name)}"


def password_of(url: str) -> str | None:
    try:
        return sa.engine.make_url(url).password
    except Exception:
        return None
