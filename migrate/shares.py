"""One migration split across several pods: ``run --shares N --share-index I --run-id R``
(a Kubernetes Indexed Job: N completions, I from JOB_COMPLETION_INDEX, R the Job's uid).

Every pod reads the whole source schema and census and computes the same split of the
tables (``split``: biggest table first, each to the share with the fewest rows so far).
Each runs the whole pipeline on its own tables: its own backup directory
(``DIR/share-I-of-N``), load, keys, the foreign keys between its own tables, verify.

A foreign key between tables of two shares needs both loaded; the share that finishes
last adds those (``join``). The target decides which share is last, in
``_migrate.shares``, one row per share of run R, read and written under a transaction
lock:

- ``begin``: the first share of R to start drops every foreign key of the migration
  before any share of R loads (a reload must not TRUNCATE a parent another share's key
  points at); every share marks itself ``working``.
- ``finish``: a share whose tables are migrated and verified marks itself ``done`` with
  the source's SHA-256. The share that sees all N done is the last: it checks that every
  share read the same source, then adds and validates the keys between shares.

A share retried after a crash marks itself working again, and being done again is last
again when the others are done: so a crash of the last share while joining is finished
by its retry. Two shares that might both see N done (a retry racing the last one) join
one after the other under a lock, the second finding the keys there and valid.
"""
from __future__ import annotations

import copy
import os

import orjson
import structlog

from .errors import UsageError, VerifyError
from .postgres_target import STATE_SCHEMA, Target
from .schema import Schema, Table, q

log = structlog.get_logger()


def split(tables: list[Table], n: int) -> dict[str, int]:
    """table name -> share index: the biggest table first, to the share with the fewest rows
    so far (ties: the lower index). The same source gives the same split in every pod."""
    load = [0] * n
    out: dict[str, int] = {}
    for t in sorted(tables, key=lambda t: (-t.rows, t.name)):
        i = min(range(n), key=lambda k: (load[k], k))
        out[t.name] = i
        load[i] += max(t.rows, 1)
    return out


class Share:
    def __init__(self, index: int, count: int, run_id: str):
        self.index, self.count, self.run_id = index, count, run_id
        self.of: dict[str, int] = {}  # table name -> share, once the source is read

    @classmethod
    def from_settings(cls, s) -> "Share | None":
        """None for a whole run; refuses what a share cannot do, before anything is opened."""
        if s.shares == 1:
            return None
        if s.shares < 1:
            raise UsageError(f"shares: {s.shares} is not a number of shares (1 or more)")
        if s.share_index is None or not 0 <= s.share_index < s.shares:
            raise UsageError(f"share index {s.share_index} is not one of 0..{s.shares - 1} "
                             "(--share-index, MIGRATE_SHARE_INDEX or JOB_COMPLETION_INDEX)")
        if not s.run_id:
            raise UsageError("--shares needs --run-id (MIGRATE_RUN_ID): the same id in every share of one "
                             "migration, a new one for the next (a Kubernetes Job's uid)")
        if s.schema_file or s.schema_from:
            raise UsageError("--shares cannot be used with --schema/--schema-from: the application's schema keeps "
                             "its foreign keys during the load, so its tables must load in one pod, parents first")
        if any(v == "@admin" for cols in s.fill_rules().values() for v in cols.values()):
            raise UsageError("--shares cannot be used with --fill-null ...=@admin: the admin is seeded by the share "
                             "that loads its table, which another share cannot wait for")
        return cls(s.share_index, s.shares, s.run_id)

    @property
    def name(self) -> str:
        return f"share-{self.index}-of-{self.count}"

    @property
    def label(self) -> str:
        return f"share {self.index} (of 0..{self.count - 1})"

    @property
    def partial(self) -> str:
        """What this share's backup, restored on its own, leaves out."""
        return (f"{self.label} of run {self.run_id!r}: the other tables are in the backups of the other "
                f"shares (share-*-of-{self.count})")

    def settings(self, s):
        """The share's own backup directory and report file."""
        out = copy.copy(s)
        out.values = dict(s.values)
        if s.backup_dir:
            out.values["backup_dir"] = os.path.join(s.backup_dir, self.name)
        if s.report:
            stem, ext = os.path.splitext(s.report)
            out.values["report"] = f"{stem}.{self.name}{ext}"
        return out

    def own(self, schema: Schema) -> Schema:
        """This share's part of the migration (the source's whole schema read by every share)."""
        self.of = split(schema.tables, self.count)
        mine = copy.copy(schema)
        mine.tables = [t for t in schema.tables if self.of[t.name] == self.index]
        log.info("share of the tables", share=self.index, shares=self.count, run_id=self.run_id,
                 tables=[t.name for t in mine.tables], rows=sum(t.rows for t in mine.tables))
        return mine

    # -- the record in the target -----------------------------------------------
    def _rows(self, cur, target: Target) -> list[dict]:
        """Every share's row of this run: {share, shares, status, sha256}."""
        cur.execute(f"SELECT share, shares, status, source_sha256 FROM {q(STATE_SCHEMA)}.{q('shares')} "
                    "WHERE target_schema = %s AND run_id = %s ORDER BY share", (target.schema, self.run_id))
        return [dict(zip(("share", "shares", "status", "sha256"), r)) for r in cur.fetchall()]

    def _lock(self, cur, target: Target) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))",
                    (f"migrate:{target.schema}:shares", self.run_id))

    def _mark(self, cur, target: Target, status: str, source_sha256: str | None, tables: list[str]) -> None:
        cur.execute(f"""INSERT INTO {q(STATE_SCHEMA)}.{q('shares')} AS s
                        (target_schema, run_id, share, shares, status, source_sha256, tables)
                        VALUES (%s, %s, %s, %s, %s, %s, %s)
                        ON CONFLICT (target_schema, run_id, share) DO UPDATE SET status = excluded.status,
                          source_sha256 = excluded.source_sha256, tables = excluded.tables, updated_at = now()""",
                    (target.schema, self.run_id, self.index, self.count, status, source_sha256,
                     orjson.dumps(tables).decode()))

    def begin(self, target: Target, everything: Schema, mine: Schema) -> None:
        from .phases.restore import drop_foreign_keys_sql
        conn = target.connect()
        try:
            target.ensure_state(conn)
            with conn.cursor() as cur:
                self._lock(cur, target)
                rows = self._rows(cur, target)
                other = {r["shares"] for r in rows} - {self.count}
                if other:
                    raise UsageError(f"run id {self.run_id!r} was started with {other.pop()} shares, this pod says "
                                     f"{self.count}", hint="every share of one migration gives the same --shares")
                if not rows:  # the first share of this run: no key of the migration while shares load
                    drop_foreign_keys_sql(everything, target, cur)
                    log.info("first share of the run: foreign keys dropped until the shares are loaded")
                self._mark(cur, target, "working", None, [t.name for t in mine.tables])
            conn.commit()
        finally:
            conn.close()

    def finish(self, target: Target, mine: Schema, source_sha256: str) -> list[dict]:
        """Mark this share done; every share's row of this run (see _rows)."""
        conn = target.connect()
        try:
            with conn.cursor() as cur:
                self._lock(cur, target)
                self._mark(cur, target, "done", source_sha256, [t.name for t in mine.tables])
                rows = self._rows(cur, target)
            conn.commit()
            return rows
        finally:
            conn.close()

    def join(self, target: Target, everything: Schema, rows: list[dict], *, orphans: str, workers: int,
             lock_timeout: float) -> tuple[list[str], list[str], int]:
        """As the last share: the keys between shares. Returns (notes, errors, keys validated)."""
        from .phases.restore import fk_name, foreign_keys
        digests = {r["sha256"] for r in rows}
        if len(digests) != 1:
            by = "; ".join(f"share {r['share']}: {r['sha256']}" for r in rows)
            raise VerifyError(f"the shares of run {self.run_id!r} read different source files (SHA-256 {by}); "
                              "the target holds a mix of them and its foreign keys between shares were not added",
                              hint="give every share the same source file, then run all shares again with a new --run-id")
        target.also_lock(f"join {self.run_id}", lock_timeout)

        def crosses(t: Table, fk) -> bool:
            return fk.ref_table in self.of and self.of[fk.ref_table] != self.of[t.name]
        notes, errors = foreign_keys(everything, target, orphans=orphans, workers=workers, wanted=crosses)
        between = [(target.qualified(t.pg_name), fk_name(t, i)) for t in everything.tables
                   for i, fk in enumerate(t.foreign_keys) if crosses(t, fk)]
        conn = target.connect()
        try:  # what is there now: a key that could not be added or validated is in notes or errors
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_constraint c JOIN unnest(%s::text[], %s::text[]) k(tbl, name) "
                            "ON c.conrelid = to_regclass(k.tbl) AND c.conname = k.name WHERE c.convalidated",
                            ([tbl for tbl, _ in between], [name for _, name in between]))
                valid = cur.fetchone()[0]
        finally:
            conn.close()
        log.info("shares joined", shares=self.count, keys_between_shares=valid, errors=len(errors))
        return notes, errors, valid
