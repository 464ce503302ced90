"""Phase: restore. Backup -> target, one transaction per table, then post-data.

Per table, in ONE transaction: TRUNCATE, COPY the converted rows, record the
table as loaded (rows + expected checksum) in ``_migrate.tables``. A crash at any
moment leaves each table either fully loaded and recorded, or as it was; the
next run skips the recorded ones and redoes the rest.

Post-data, after every table is loaded (pgloader's order, for the same reason:
building keys once over the data is much faster than maintaining them per row,
and foreign keys can only be checked once all parents are there): primary keys,
unique and plain indexes, foreign keys, then identity sequences past max(id),
then ANALYZE.
"""
from __future__ import annotations

import contextlib
import os
import time
import zlib

import orjson
import psycopg2
import structlog

from ..codec import decoder
from ..convert import RowConverter
from ..errors import BackupError, ConflictError, DataError, MigrateError, TargetUnavailable
from ..postgres_target import TRANSIENT_ERRORS, Target, classify
from ..progress import current
from ..schema import ForeignKey, Schema, Table, pg_ident, q
from ..types import fold
from ..workers import JOB
from .. import workers as workers_module
from .backup import open_table_file, sha256_file, sha256_meanwhile
from .seed_admin import seeded_keys
from .verify import fingerprint, fk_pairs
from .verify import orphans as find_orphans

log = structlog.get_logger()
CHUNK_ROWS = 5000


class _CopyStream:
    """A read()-able stream of COPY text for copy_expert, built from the backup file."""

    def __init__(self, t: Table, path: str, on_error: str, rejects_path: str, fills: dict | None = None,
                 part: tuple[int, int] | None = None):
        self.t = t
        self.f = open_table_file(path)
        self.pos, self.end = part or (0, None)  # a part: the lines starting in [pos, end) of the file
        if self.pos:
            self.f.seek(self.pos)
        marked = [i for i, c in enumerate(t.columns)
                  if c.census.blob or c.census.nonfinite or c.census.invalid_utf8]
        self.decode = decoder(marked)
        # the backup converted every row to these very types without an error: its checksum is
        # the expected content, and the load need not canonicalise or hash again
        self.trusted = not fills and t.converted_by_backup()
        self.conv = RowConverter(t, fills, trusted=self.trusted)
        self.on_error = on_error
        self.rejects_path = rejects_path
        self.rejects = None
        self.rows = self.loaded = self.rejected = 0
        self.content = 0
        self.error: Exception | None = None

    def read(self, _size=-1) -> bytes:
        try:
            return self._next()
        except Exception as e:  # remembered: psycopg2 only sees "COPY failed"
            self.error = e
            raise

    def _next(self) -> bytes:
        lines = []
        try:
            for raw in self.f:
                if self.end is not None:
                    if self.pos >= self.end:
                        break
                    self.pos += len(raw)
                raw = raw.rstrip(b"\n")
                if not raw:
                    continue
                lines.append(raw)
                if len(lines) >= CHUNK_ROWS:
                    break
        except (OSError, EOFError, zlib.error) as e:
            raise BackupError(f"backup file {self.t.file!r} of table {self.t.name!r} is unreadable: {e}") from None
        if not lines:
            return b""
        try:
            batch = [self.decode(x) for x in lines]
        except (orjson.JSONDecodeError, ValueError, IndexError) as e:
            raise BackupError(f"backup file for table {self.t.name!r} is corrupt near row {self.rows + 1}: {e}") from None
        errors: list = []
        if self.trusted:
            out = self.conv.lines(batch, self.rows, errors)
        else:
            out, h = self.conv.converted(batch, self.rows, errors)
            self.content += h
        self.rows += len(batch)
        if errors:
            if self.on_error != "reject":
                err = errors[0][0]
                raise DataError(str(err), hint="fix the value in the source, set --column-type, or use "
                                               "--on-error reject to load the other rows and list the bad ones")
            self._reject(errors, lines)
        self.loaded += len(out)
        current().advance(len(batch))
        out.append("")
        return "\n".join(out).encode("utf-8")

    def _reject(self, errors, raw_lines) -> None:
        """--on-error reject: each bad row, with why, in the backup's own encoding."""
        if self.rejects is None:
            os.makedirs(os.path.dirname(self.rejects_path), exist_ok=True)
            self.rejects = open(self.rejects_path, "wb")
        for err, n in errors:
            self.rejects.write(orjson.dumps({**err.to_dict(), "row": orjson.Fragment(raw_lines[n])}) + b"\n")
            self.rejected += 1

    @property
    def checksum(self) -> str:
        return self.t.checksum if self.trusted else fold(self.content)

    @property
    def filled(self) -> int:
        return self.conv.filled

    def close(self) -> None:
        self.f.close()
        if self.rejects:
            self.rejects.close()


class _SpillStream:
    """The COPY text the backup of this very run wrote next to the table's JSON (see
    backup.run's spill), sent as it is: the rows were converted once, by the backup, whose
    content checksum verify compares with the target."""

    def __init__(self, t: Table, part: tuple[int, int] | None):
        self.t = t
        self.f = open(t.spill, "rb")
        self.pos, self.end = part or (0, os.path.getsize(t.spill))
        self.f.seek(self.pos)
        self.rows = self.loaded = self.rejected = self.filled = 0
        self.error = None
        self.checksum = t.checksum

    def read(self, _size=-1) -> bytes:
        data = self.f.read(min(1 << 20, self.end - self.pos))
        self.pos += len(data)
        n = data.count(b"\n")
        self.rows += n
        self.loaded += n
        current().advance(n)
        return data

    def close(self) -> None:
        self.f.close()


def spilled(t: Table, fills: dict | None) -> bool:
    """Whether this run's backup left the table's rows as COPY text, good to send as they are."""
    return bool(getattr(t, "spill", None)) and not fills and t.converted_by_backup() and os.path.exists(t.spill)


def _check_backup(t: Table, rows: int, sha256=None) -> None:
    """What was read of a table's backup file must be what its manifest recorded: its row
    count and (sha256: a function giving the file's digest, see sha256_meanwhile) its
    SHA-256. A spill file, this run's own, is checked by its row count."""
    try:
        digest = sha256() if sha256 else None
    except OSError as e:
        raise BackupError(f"backup file {t.file!r} of table {t.name!r} is unreadable: {e.strerror}") from None
    if rows != t.rows or (digest is not None and digest != t.file_sha256):
        raise BackupError(f"backup file {t.file!r} of table {t.name!r} does not match its manifest "
                          f"({rows} rows read, {t.rows} recorded; SHA-256 {digest} vs {t.file_sha256}): "
                          "the backup is corrupt")


def fk_name(t: Table, i: int) -> str:
    return pg_ident(f"{t.pg_name}_fk{i + 1}")


def source_signature(t: Table, fills: dict | None) -> str:
    """What a table was loaded from: the backup's content and the fill rules applied."""
    rules = ",".join(f"{k}={v!r}" for k, v in sorted((fills or {}).items()))
    return f"{t.file_sha256}:{t.checksum}:{rules}:{t.types_signature()}"


def load_table(target: Target, conn, t: Table, backup_dir: str, on_error: str, fills: dict | None = None,
               cascade: bool = False, part: tuple[int, int] | None = None) -> dict:
    """The whole table in one transaction (TRUNCATE, COPY, state), or with part=(start, end)
    only the lines of the backup file starting in that byte range (COPY alone; the parent
    truncated the table before and records it once every part is in: see _load_parallel)."""
    path = os.path.join(backup_dir, t.file)
    if not os.path.exists(path):
        raise BackupError(f"backup {backup_dir!r} has no file {t.file!r} for table {t.name!r}")
    rejects_path = os.path.join(backup_dir, "rejects", os.path.basename(t.file))
    if os.path.exists(rejects_path) and part is None:
        os.remove(rejects_path)
    stream = _SpillStream(t, part) if spilled(t, fills) else \
        _CopyStream(t, path, on_error, rejects_path, fills, part)
    cols = ", ".join(q(c.pg_name) for c in t.columns)
    start = time.monotonic()
    # the file's SHA-256, read in a thread while the load runs (not for a part: see _record_parts)
    sha256 = None if part is not None or isinstance(stream, _SpillStream) else sha256_meanwhile(path)
    try:
        with conn.cursor() as cur:
            # the application's schema keeps its foreign keys during the load: its children are
            # emptied with the parent and, their content no longer matching, reloaded after it
            if part is None:
                _truncate(cur, target, t, cascade)
            cur.copy_expert(f"COPY {target.qualified(t.pg_name)} ({cols}) FROM STDIN", stream, size=1 << 16)
            if part is not None:
                conn.commit()
                return {"rows": stream.rows, "loaded": stream.loaded,
                        "seconds": round(time.monotonic() - start, 3)}
            _check_backup(t, stream.rows, sha256)
            target.set_state(cur, t.pg_name, status="loaded", rows=stream.loaded, checksum=stream.checksum,
                             source=source_signature(t, fills))
        conn.commit()
    except Exception as e:
        try:
            conn.rollback()
        except psycopg2.Error:
            pass  # the connection is gone; the server rolled the transaction back
        if stream.error is not None and isinstance(stream.error, MigrateError):
            raise stream.error from None
        if isinstance(e, MigrateError):
            raise
        if isinstance(e, psycopg2.Error):
            diag = getattr(e, "diag", None)
            context = f" ({diag.context.strip()})" if diag is not None and diag.context else ""
            err = classify(e, f"loading table {t.name!r}{context}")
            raise err from None
        raise
    finally:
        stream.close()
    return {"rows": stream.rows, "loaded": stream.loaded, "rejected": stream.rejected,
            "filled": stream.filled, "checksum": stream.checksum,
            "seconds": round(time.monotonic() - start, 3)}


def _truncate(cur, target: Target, t: Table, cascade: bool = False) -> None:
    """Empty a table about to be loaded. Our own keys are gone by now (drop_foreign_keys);
    one still pointing at it is a key of a table this run leaves out (--table): refused."""
    try:
        cur.execute(f"TRUNCATE {target.qualified(t.pg_name)}{' CASCADE' if cascade else ''}")
    except psycopg2.errors.FeatureNotSupported as e:
        detail = (e.diag.message_detail or "").strip()
        cur.connection.rollback()
        raise ConflictError(f"table {t.name!r} must be reloaded, but a foreign key of a table this run leaves "
                            f"out points at it ({detail or str(e).strip()}); nothing of it was changed",
                            hint="include the referencing table (--table), or run without --table") from None


def drop_foreign_keys(schema: Schema, target: Target, conn) -> None:
    """Our FKs go before any load (TRUNCATE of a parent must not cascade); post-data
    adds them back. Runs are idempotent because of this."""
    with conn.cursor() as cur:
        drop_foreign_keys_sql(schema, target, cur)
    conn.commit()


def drop_foreign_keys_sql(schema: Schema, target: Target, cur) -> None:
    for t in schema.tables:
        for i, _fk in enumerate(t.foreign_keys):
            cur.execute(f"ALTER TABLE IF EXISTS {target.qualified(t.pg_name)} DROP CONSTRAINT IF EXISTS {q(fk_name(t, i))}")


def load(schema: Schema, backup_dir: str, target: Target, *, on_error: str = "fail",
         fills_for=None, after_table=None, workers: int = 1, filled_tables=()) -> dict[str, dict]:
    """Load every table, skipping those already loaded from the same content. A transient
    failure (e.g. the server restarting) redoes the current table. fills_for(table) ->
    {column: value} for --fill-null; after_table(table, conn) runs after each table (the
    admin is seeded there, before its children load).

    With workers > 1 the derived schema's tables load at once, biggest first, each in a
    worker process of its own (its own connection and transaction); foreign keys come in
    post-data, so the order between tables does not matter. The application's schema
    keeps its foreign keys during the load, and tables with --fill-null rules need the
    admin first: those load one after another, parents first."""
    conn = target.retrying("connecting", _prepare, schema, target)
    results: dict[str, dict] = {}
    progress = current()
    progress.start_phase("restore", sum(t.rows for t in schema.tables))
    try:
        order = schema.restore_order()
        at_once = [t for t in order if t.name not in filled_tables] if schema.app_ddl is None else []
        if workers > 1 and len(at_once) > 1:
            conn.close()  # nothing of ours is open while the workers fork
            conn = None
            _load_parallel(at_once, backup_dir, target, on_error, results, workers, after_table)
        for t in order:
            if t.name in results:
                continue
            structlog.contextvars.bind_contextvars(table=t.name)
            progress.start_table(t.name, t.rows)
            fills = fills_for(t) if fills_for else None
            conn = target.retrying(f"loading table {t.name!r}", _load_one, target, conn, t, backup_dir,
                                   on_error, results, fills, schema.app_ddl is not None)
            if after_table:
                conn = target.retrying(f"after table {t.name!r}", _after, target, conn, t, after_table)
            if results[t.name].get("skipped"):
                progress.advance(t.rows)
        return results
    finally:
        structlog.contextvars.unbind_contextvars("table")
        progress.end_phase()
        if conn is not None:
            conn.close()


# ------------------------------------------------------------ parallel load --
_INHERITED: list = []  # the parent's connections as a worker inherits them: never closed there


PART_MIN_ROWS = 100_000  # a table this big is loaded by several workers at once, a part each


def _parts(t: Table, backup_dir: str, n: int) -> list[tuple[int, int]] | None:
    """Byte ranges of the backup file, split at line starts; None when the table loads whole:
    small, compressed (no seeking), or not known to convert without an error (rejects and
    row numbers in messages need one reader)."""
    path = t.spill if spilled(t, None) else os.path.join(backup_dir, t.file)
    if (n < 2 or t.rows < PART_MIN_ROWS or path.endswith(".gz") or not t.converted_by_backup()
            or not os.path.exists(path)):
        return None
    size = os.path.getsize(path)
    cuts = [0]
    with open(path, "rb") as f:
        for i in range(1, n):
            f.seek(size * i // n)
            f.readline()
            if f.tell() > cuts[-1] and f.tell() < size:
                cuts.append(f.tell())
    cuts.append(size)
    return list(zip(cuts, cuts[1:]))


def _load_parallel(tables: list[Table], backup_dir: str, target: Target, on_error: str, results: dict,
                   workers: int, after_table) -> None:
    """Tables at once in worker processes, biggest first; a big table in parts, each part
    COPYed by a worker in a transaction of its own. Such a table is truncated and marked
    'loading' first and recorded as loaded only when every part is in and the rows and the
    backup checksum add up; a crash in between leaves it unrecorded, and the next run
    loads it again from empty. Without worker processes (no POSIX semaphores), nothing is
    loaded here and the caller loads every table itself."""
    work: list[tuple[Table, tuple[int, int] | None]] = []
    pending: dict[str, tuple[int, list]] = {}  # table loaded in parts -> (parts, results so far)
    conn = target.retrying("connecting", target.connect)
    try:
        for t in sorted(tables, key=lambda t: -t.rows):
            parts = _parts(t, backup_dir, workers)
            if parts is None:
                work.append((t, None))
                continue
            done = target.retrying(f"loading table {t.name!r}", _already_loaded, target, conn, t, None)
            if done:
                results[t.name] = done
                current().advance(t.rows)
                continue
            with conn.cursor() as cur:
                _truncate(cur, target, t)
                target.set_state(cur, t.pg_name, status="loading", rows=0, checksum="", source="")
            conn.commit()
            log.info("loading table", table=t.name, rows=t.rows, parts=len(parts))
            pending[t.name] = (len(parts), [])
            work += [(t, p) for p in parts]
    finally:
        conn.close()  # nothing of ours is open while the workers fork
    by_name = {t.name: t for t in tables}
    JOB.update(target=target, backup_dir=backup_dir, on_error=on_error, tables=by_name)

    def done(item, outcome, failed: bool) -> None:
        t, part = by_name[item[0]], item[1]
        target.ensure_lock()  # a server restart took the lock with our session: take it again
        if part is not None:
            expected, done_parts = pending[t.name]
            done_parts.append(outcome)
            if len(done_parts) < expected:
                return
            outcome = target.retrying(f"recording table {t.name!r}", _record_parts, target, t, done_parts, backup_dir)
        results[t.name] = outcome
        if after_table and not failed:
            target.retrying(f"after table {t.name!r}", _after, target, None, t, after_table).close()
    workers_module.run(workers, _worker_load, [(t.name, part) for t, part in work], done, init=_inherit_target)


def _record_parts(target: Target, t: Table, parts: list[dict], backup_dir: str) -> dict:
    rows = sum(p["rows"] for p in parts)
    path = os.path.join(backup_dir, t.file)
    _check_backup(t, rows, None if spilled(t, None) else lambda: sha256_file(path))
    conn = target.connect()
    try:
        with conn.cursor() as cur:
            target.set_state(cur, t.pg_name, status="loaded", rows=rows, checksum=t.checksum,
                             source=source_signature(t, None))
        conn.commit()
    finally:
        conn.close()
    res = {"rows": rows, "loaded": sum(p["loaded"] for p in parts), "rejected": 0, "filled": 0,
           "checksum": t.checksum, "seconds": max(p["seconds"] for p in parts), "parts": len(parts)}
    log.info("table loaded", table=t.name, **res)
    return res


def _inherit_target() -> None:
    target = JOB["target"]
    _INHERITED.append(target._lock_conn)  # the parent's session: closing it here would end it there
    target._lock_conn = None  # the parent holds the lock and takes it again after a restart


def _worker_load(name: str, part: tuple[int, int] | None):
    """A table, or a part of one, in a worker process."""
    t = JOB["tables"][name]
    target = JOB["target"]
    current().start_table(t.name, t.rows)
    structlog.contextvars.bind_contextvars(table=t.name)
    results: dict = {}
    if part is not None:
        return target.retrying(f"loading table {t.name!r}", _load_part, target, t, JOB["backup_dir"], part)
    conn = target.retrying(f"loading table {t.name!r}", _load_one, target, None, t, JOB["backup_dir"],
                           JOB["on_error"], results, None, False)
    conn.close()
    if results[t.name].get("skipped"):
        current().advance(t.rows)
    return results[t.name]


def _load_part(target: Target, t: Table, backup_dir: str, part: tuple[int, int]) -> dict:
    conn = target.connect()
    try:
        return load_table(target, conn, t, backup_dir, "fail", part=part)
    except psycopg2.Error as e:
        raise classify(e, f"loading table {t.name!r}") from None
    finally:
        _close_quietly(conn)


def _after(target: Target, conn, t: Table, fn):
    if conn is None or conn.closed:
        conn = target.connect()
    fn(t, conn)
    return conn


def _prepare(schema: Schema, target: Target):
    conn = target.connect()
    try:
        target.ensure_state(conn)
        if schema.app_ddl is None:
            drop_foreign_keys(schema, target, conn)
    except psycopg2.Error as e:
        conn.close()
        raise classify(e, "preparing the load") from None
    return conn


def _load_one(target: Target, conn, t: Table, backup_dir: str, on_error: str, results: dict, fills,
              cascade: bool = False):
    """One table; returns the connection to go on with (a fresh one after a failure)."""
    if conn is None or conn.closed:
        conn = target.connect()
    try:
        done = _already_loaded(target, conn, t, fills)
        if done:
            results[t.name] = done
            return conn
        log.info("loading table", table=t.name, rows=t.rows)
        results[t.name] = load_table(target, conn, t, backup_dir, on_error, fills, cascade=cascade)
        log.info("table loaded", table=t.name, **results[t.name])
        return conn
    except psycopg2.Error as e:
        _close_quietly(conn)
        raise classify(e, f"loading table {t.name!r}") from None
    except TargetUnavailable:
        _close_quietly(conn)
        raise


def _already_loaded(target: Target, conn, t: Table, fills) -> dict | None:
    """The result of an earlier run that loaded this very content, if the table still holds it."""
    st = target.state(conn).get(t.pg_name, {})
    if st.get("status") == "loaded" and st.get("source") == source_signature(t, fills):
        with conn.cursor() as cur:
            same = fingerprint(cur, target, t, seeded_keys(cur, target, t.pg_name)) == (st["rows"], st["checksum"])
        if same:
            conn.rollback()
            log.info("table already loaded by an earlier run; skipped", table=t.name, rows=t.rows)
            return {"rows": t.rows, "loaded": st["rows"], "rejected": t.rows - st["rows"],
                    "checksum": st["checksum"], "seconds": 0.0, "skipped": "already loaded"}
    conn.rollback()
    return None


def _close_quietly(conn) -> None:
    try:
        conn.close()
    except psycopg2.Error:
        pass


# ---------------------------------------------------------------- post-data --
def _exists(cur, target: Target, name: str) -> bool:
    cur.execute("SELECT to_regclass(%s)", (target.qualified(name),))
    return cur.fetchone()[0] is not None


def _unique_sets(t: Table) -> list[set[str]]:
    sets = [{c.name for c in t.pk}] if t.pk else []
    sets += [set(i.columns) for i in t.indexes if i.unique and not i.skipped]
    return sets


def post_data(schema: Schema, target: Target, *, orphans: str = "fail", workers: int = 1,
              migrated: Schema | None = None) -> tuple[list[str], list[str]]:
    """Keys, indexes, statistics, foreign keys, sequences. Returns (notes, errors).

    Primary keys, indexes and ANALYZE of different tables run at once (workers connections:
    PostgreSQL does the work); then the foreign keys (see foreign_keys). ``migrated``: the
    whole migration when ``schema`` is one share of it (``run --shares``): a key to a table
    of another share is left for the share that finishes last (shares.join)."""
    notes: list[str] = []
    errors: list[str] = []
    table_names = {t.pg_name for t in schema.tables}
    derived = schema.app_ddl is None  # the app's DDL brings its own keys

    def keys(t: Table) -> tuple[list[str], list[str]]:
        t_notes: list[str] = []
        t_errors: list[str] = []
        with _connection(target) as cur:
            if derived:
                try:
                    _primary_key(cur, target, t, t_notes)
                except psycopg2.errors.UniqueViolation as e:
                    t_errors.append(f"table {t.name!r}: primary key cannot be built: {e.diag.message_detail or e}")
                _indexes(cur, target, t, table_names, t_notes, t_errors)
            cur.execute(f"ANALYZE {target.qualified(t.pg_name)}")
        return t_notes, t_errors

    from concurrent.futures import ThreadPoolExecutor
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            biggest_first = sorted(schema.tables, key=lambda t: -t.rows)
            built = dict(zip((t.name for t in biggest_first), pool.map(keys, biggest_first)))
        for t in schema.tables:  # reported in the schema's order, whatever finished first
            notes += [n for n in built[t.name][0] if n not in notes]
            errors += built[t.name][1]
        if derived:
            own = {t.name for t in schema.tables}
            everything = migrated or schema
            others = {t.name for t in everything.tables} - own
            fk_notes, fk_errors = foreign_keys(everything, target, orphans=orphans, workers=workers,
                                               children=schema.tables,
                                               wanted=lambda t, fk: fk.ref_table not in others)
            notes += fk_notes
            errors += fk_errors
        with _connection(target) as cur:
            for t in schema.tables:
                _sequence(cur, target, t)
    except psycopg2.Error as e:
        raise classify(e, "post-data") from None
    for n in notes:
        log.warning("post-data: " + n)
    return notes, errors


def foreign_keys(schema: Schema, target: Target, *, orphans: str = "fail", workers: int = 1,
                 children: list[Table] | None = None, wanted=None) -> tuple[list[str], list[str]]:
    """The foreign keys of ``children`` (default: every table of schema) for which
    wanted(child, key) holds, to parents among schema's tables. Added NOT VALID one after
    another (an instant catalog change, but it locks both tables), then validated at once,
    one connection per child table: VALIDATE locks only the child against another VALIDATE,
    and the scan that proves there is no orphan is the long part. Returns (notes, errors)."""
    notes: list[str] = []
    errors: list[str] = []
    by_name = {t.name: t for t in schema.tables}

    def validate(group: list[dict]) -> list[dict]:
        with _connection(target) as cur:
            for fk in group:
                _validate_foreign_key(cur, target, fk)
        return group

    from concurrent.futures import ThreadPoolExecutor
    try:
        with _connection(target) as cur, ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            added = [a for t in (schema.tables if children is None else children)
                     for i, fk in enumerate(t.foreign_keys) if wanted is None or wanted(t, fk)
                     if (a := _add_foreign_key(cur, target, t, i, fk, by_name, notes, errors))]
            by_child: dict[str, list[dict]] = {}
            for fk in added:
                by_child.setdefault(fk["child"].name, []).append(fk)
            list(pool.map(validate, sorted(by_child.values(), key=lambda g: -g[0]["child"].rows)))
            for fk in added:  # in the schema's order
                _foreign_key_outcome(cur, target, fk, orphans, notes, errors)
    except psycopg2.Error as e:
        raise classify(e, "foreign keys") from None
    return notes, errors


@contextlib.contextmanager
def _connection(target: Target):
    """A cursor on a connection of its own, in autocommit (a failed statement leaves it usable)."""
    conn = target.connect()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def _primary_key(cur, target: Target, t: Table, notes: list[str]) -> None:
    if not t.pk:
        return
    cols = ", ".join(q(c.pg_name) for c in t.pk)
    if any(c.census.null for c in t.pk):
        name = pg_ident(f"{t.pg_name}_pkey_nulls")
        if not _exists(cur, target, name):
            cur.execute(f"CREATE UNIQUE INDEX {q(name)} ON {target.qualified(t.pg_name)} ({cols})")
        msg = (f"table {t.name!r}: primary key column(s) hold NULLs (SQLite allows it, PostgreSQL does not); "
               "created a UNIQUE index instead")
        if msg not in notes:
            notes.append(msg)
        return
    name = pg_ident(f"{t.pg_name}_pkey")
    cur.execute("SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'p'",
                (target.qualified(t.pg_name),))
    if cur.fetchone() is None:
        cur.execute(f"ALTER TABLE {target.qualified(t.pg_name)} ADD CONSTRAINT {q(name)} PRIMARY KEY ({cols})")


def index_name(t: Table, idx, table_names: set[str]) -> str:
    if idx.origin == "c" and not idx.name.startswith("sqlite_") and pg_ident(idx.name) not in table_names:
        return pg_ident(idx.name)
    cols = "_".join(idx.columns)
    return pg_ident(f"{t.pg_name}_{cols}_{'key' if idx.unique else 'idx'}")


def _indexes(cur, target: Target, t: Table, table_names: set[str], notes: list[str], errors: list[str]) -> None:
    for idx in t.indexes:
        if idx.skipped:
            msg = f"table {t.name!r}: index {idx.name!r} not created: {idx.skipped}"
            if msg not in notes:
                notes.append(msg)
            continue
        name = index_name(t, idx, table_names)
        if _exists(cur, target, name):
            continue
        cols = ", ".join(q(t.column(c).pg_name) for c in idx.columns)
        try:
            cur.execute(f"CREATE {'UNIQUE ' if idx.unique else ''}INDEX {q(name)} ON {target.qualified(t.pg_name)} ({cols})")
        except psycopg2.errors.UniqueViolation as e:
            errors.append(f"table {t.name!r}: unique index {idx.name!r} cannot be built: {e.diag.message_detail or e}")


def _add_foreign_key(cur, target: Target, t: Table, i: int, fk: ForeignKey, by_name: dict,
                     notes: list[str], errors: list[str]) -> dict | None:
    """Add the key NOT VALID (or find it added by an earlier run); what validating it needs,
    or None: nothing to validate (not created, or there and valid already)."""
    where = f"table {t.name!r}: foreign key ({', '.join(fk.columns)}) -> {fk.ref_table!r}"
    if fk.ref_table not in by_name:
        notes.append(f"{where} not created: the referenced table is not migrated")
        return None
    resolved = fk_pairs(t, fk, by_name)
    if resolved is None:
        notes.append(f"{where} not created: its columns do not match the referenced table's key")
        return None
    parent, pairs = resolved
    ref_cols = [b.name for _, b in pairs]
    if set(ref_cols) not in _unique_sets(parent) or any(c.census.null for c in parent.pk):
        notes.append(f"{where} not created: ({', '.join(ref_cols)}) is not unique in {fk.ref_table!r} "
                     "(SQLite reports 'foreign key mismatch' for it too)")
        return None
    mismatch = [(a.name, a.pg_type, b.pg_type) for a, b in pairs if a.pg_type != b.pg_type]
    if mismatch:
        notes.append(f"{where} not created: column types differ after migration {mismatch}")
        return None
    name = fk_name(t, i)
    cur.execute("SELECT convalidated FROM pg_constraint WHERE conrelid = to_regclass(%s) AND conname = %s",
                (target.qualified(t.pg_name), name))
    found = cur.fetchone()
    if found and found[0]:
        return None
    if found is None:
        cols = ", ".join(q(a.pg_name) for a, _ in pairs)
        refs = ", ".join(q(b.pg_name) for _, b in pairs)
        try:
            cur.execute(f"ALTER TABLE {target.qualified(t.pg_name)} ADD CONSTRAINT {q(name)} FOREIGN KEY ({cols}) "
                        f"REFERENCES {target.qualified(parent.pg_name)} ({refs}) "
                        f"ON UPDATE {fk.on_update} ON DELETE {fk.on_delete} NOT VALID")
        except psycopg2.Error as e:
            if isinstance(e, TRANSIENT_ERRORS) or "closed" in str(e):
                raise
            errors.append(f"{where}: {str(e).strip().splitlines()[0]}")
            return None
    # a key left NOT VALID by a crash (or by --orphans not-valid) is validated again
    return {"child": t, "parent": parent, "pairs": pairs, "name": name, "where": where, "failed": None}


def _validate_foreign_key(cur, target: Target, fk: dict) -> None:
    """The scan proving every child row has its parent; fk["failed"]: None, "orphans" or why."""
    try:
        cur.execute(f"ALTER TABLE {target.qualified(fk['child'].pg_name)} VALIDATE CONSTRAINT {q(fk['name'])}")
    except psycopg2.errors.ForeignKeyViolation:
        fk["failed"] = "orphans"
    except psycopg2.Error as e:
        if isinstance(e, TRANSIENT_ERRORS) or "closed" in str(e):
            raise
        fk["failed"] = str(e).strip().splitlines()[0]


def _foreign_key_outcome(cur, target: Target, fk: dict, orphans: str, notes: list[str], errors: list[str]) -> None:
    """Report a key that did not validate; it stays NOT VALID only with --orphans not-valid."""
    if fk["failed"] is None:
        return
    t, where = fk["child"], fk["where"]
    if fk["failed"] == "orphans":
        # validating the key is the scan that finds orphans: look for them only when it fails
        n, key_cols, bad = find_orphans(cur, target, t, fk["parent"], fk["pairs"])
        sample = "; ".join(", ".join(f"{k}={v!r}" for k, v in zip(key_cols, r)) for r in bad)
        msg = f"{where}: {n} orphan row(s) whose parent does not exist, e.g. {sample}"
        if orphans == "not-valid":
            notes.append(msg + "; key added NOT VALID")
            return
        errors.append(msg + " (use --orphans not-valid to add the key NOT VALID and keep the rows)")
    else:
        errors.append(f"{where}: {fk['failed']}")
    cur.execute(f"ALTER TABLE {target.qualified(t.pg_name)} DROP CONSTRAINT IF EXISTS {q(fk['name'])}")


def _sequence(cur, target: Target, t: Table) -> None:
    """Every sequence-backed column (identity or serial) of the table, past its max."""
    cur.execute("SELECT a.attname, pg_get_serial_sequence(%s, a.attname) FROM pg_attribute a "
                "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped",
                (target.qualified(t.pg_name), target.qualified(t.pg_name)))
    for col, seq in cur.fetchall():
        if seq is None:
            continue
        cur.execute(f"SELECT max({q(col)}) FROM {target.qualified(t.pg_name)}")
        mx = cur.fetchone()[0]
        floor = t.autoincrement_seq if len(t.pk) == 1 and t.pk[0].pg_name == col else None
        high = max(mx or 0, floor or 0)  # AUTOINCREMENT never reuses an id, even a deleted one
        if high >= 1:
            cur.execute("SELECT setval(%s, %s, true)", (seq, high))
        else:
            cur.execute("SELECT setval(%s, 1, false)", (seq,))
