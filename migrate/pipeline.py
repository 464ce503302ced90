"""The ordered phases. Each command of the CLI is one function here; ``run`` calls the
phases in order:

    STEP 1 wait for target   STEP 2 read source (schema + census)   STEP 3 init schema
    STEP 4 backup            STEP 5 restore (load, FK order)        STEP 6 seed admin
    STEP 7 post-data (keys, indexes, foreign keys, sequences)       STEP 8 verify
    (run --shares: STEP 9 join shares, see shares.py)

The admin is seeded after the rows are loaded and before foreign keys are checked,
so restored rows that reference it are valid when their constraint is added, and
the restore (which truncates the tables it loads) cannot wipe it.
"""
from __future__ import annotations

import fnmatch
import time

import structlog

from .errors import (EXIT, DataError, MigrateError, PartialError, UsageError, VerifyError)
from .phases import backup as backup_phase
from .phases import init_schema as init_phase
from .phases import restore as restore_phase
from .phases import verify as verify_phase
from .postgres_target import Target
from .report import build, summary_table, write
from .schema import Schema, q
from .settings import Settings
from .shares import Share
from .sqlite_source import SourceDB

log = structlog.get_logger()


class Steps:
    def __init__(self, names: list[str]):
        self.names = names
        self.n = 0

    def __call__(self, name: str) -> None:
        self.n = self.names.index(name) + 1
        structlog.contextvars.bind_contextvars(phase=name)
        log.info(f"STEP {self.n}/{len(self.names)} {name}")


def _require(s: Settings, *names: str) -> None:
    flags = {"source": "--source / MIGRATE_SOURCE", "target": "--target / MIGRATE_TARGET",
             "backup_dir": "--backup-dir / MIGRATE_BACKUP_DIR"}
    missing = [flags[n] for n in names if not getattr(s, n)]
    if missing:
        raise UsageError("missing " + " and ".join(missing))


def filter_tables(schema: Schema, include: list[str], exclude: list[str]) -> list[str]:
    """Apply --table/--exclude-table globs; returns what makes the run partial."""
    partial = []
    keep = []
    for t in schema.tables:
        if (include and not any(fnmatch.fnmatchcase(t.name, p) for p in include)) or \
                any(fnmatch.fnmatchcase(t.name, p) for p in exclude):
            partial.append(f"table {t.name!r} left out by --table/--exclude-table")
        else:
            keep.append(t)
    if include and not keep:
        raise UsageError(f"--table {', '.join(include)} matches no table of the source")
    schema.tables = keep
    for sk in schema.skipped:
        if sk.kind == "virtual table":
            partial.append(f"{sk.kind} {sk.name!r} not migrated: {sk.reason}")
    return partial


def app_ddl(s: Settings) -> str | None:
    if s.schema_file or s.schema_from:
        from .app_schema import load_ddl
        return load_ddl(s.schema_file, s.schema_from)
    return None


def open_source(s: Settings, utf8_check: bool = False) -> tuple[SourceDB, Schema, list[str]]:
    src = SourceDB(s.source, s.source_timeout)
    try:
        schema = src.read_schema(census=True, utf8_check=utf8_check, workers=s.workers)
        partial = filter_tables(schema, s.tables, s.exclude_tables)
        schema.decide(s.column_type_overrides())
        schema.app_ddl = app_ddl(s)
    except BaseException:
        src.close()
        raise
    if s.limit is not None:
        partial.append(f"trial run: at most {s.limit} rows per table (--limit)")
    return src, schema, partial


def make_target(s: Settings) -> Target:
    return Target(s.target, s.target_schema, connect_timeout=s.connect_timeout,
                  statement_timeout_s=s.statement_timeout, lock_timeout_s=s.lock_timeout,
                  retry_s=s.wait_timeout, password=s.secrets.get("target_password"))


def schema_from(s: Settings) -> tuple[Schema, SourceDB | None, list[str]]:
    """The model from --backup-dir (preferred when given) or --source."""
    if s.backup_dir and not s.source:
        m = backup_phase.read_manifest(s.backup_dir)
        schema = backup_phase.schema_from_manifest(m)
        partial = filter_tables(schema, s.tables, s.exclude_tables)
        schema.app_ddl = app_ddl(s)
        if m.get("partial"):
            reasons = m["partial"].get("reasons") or [f"at most {m['partial']['limit']} rows per table"]
            partial.append("the backup itself is partial: " + "; ".join(reasons))
        return schema, None, partial
    _require(s, "source")
    src, schema, partial = open_source(s)
    return schema, src, partial


def _compress(s: Settings) -> str | None:
    return None if s.backup_compress == "none" else s.backup_compress


def _fillable(s: Settings, schema: Schema) -> None:
    """A column with a --fill-null rule never receives NULL: no NOT NULL pre-check for it."""
    for tname, cols in s.fill_rules().items():
        for t in schema.tables:
            if t.name == tname:
                for c in t.columns:
                    if c.name in cols:
                        c.app_notnull = False


def conversion_failure(schema: Schema, on_error: str) -> None:
    if on_error == "reject":
        return
    bad = [t for t in schema.tables if t.conversion_errors]
    if bad:
        t = bad[0]
        e = t.error_samples[0]
        key = ", ".join(f"{k}={v!r}" for k, v in e["key"].items())
        total = sum(x.conversion_errors for x in bad)
        raise DataError(
            f"table {e['table']!r}, row {key}, column {e['column']!r}: value {e['value']} cannot become "
            f"{t.column(e['column']).pg_type}: {e['reason']} ({total} bad value(s) in {len(bad)} table(s); "
            "nothing was loaded)",
            hint="fix the source, set --column-type TABLE.COLUMN=TYPE, or use --on-error reject "
                 "to load the good rows and write the bad ones to the rejects file")


# ------------------------------------------------------------------ commands --
def cmd_plan(s: Settings) -> dict:
    from .plan import make_plan
    _require(s, "source")
    src, schema, partial = open_source(s, utf8_check=True)
    with src:
        return make_plan(src, schema, partial, s)


def cmd_backup(s: Settings) -> dict:
    _require(s, "source", "backup_dir")
    src, schema, partial = open_source(s)
    with src:
        backup_phase.run(src.path, s.backup_dir, schema, src, s.limit, _compress(s), s.workers, partial=partial)
    conversion = sum(t.conversion_errors for t in schema.tables)
    return {"tables": [{"table": t.name, "rows": t.rows, "conversion_errors": t.conversion_errors}
                       for t in schema.tables], "partial": partial, "conversion_errors": conversion}


def cmd_init_schema(s: Settings) -> dict:
    _require(s, "target")
    target = make_target(s)  # configuration first: nothing is opened when it is wrong
    schema, src, _ = schema_from(s)
    if src:
        src.close()
    target.wait(s.wait_timeout)
    target.lock(s.lock_timeout)
    try:
        return init_phase.run(schema, target, replace=s.replace, restart=s.restart, drop_columns=s.drop_columns)
    finally:
        target.unlock()


def cmd_seed_admin(s: Settings) -> str:
    from .phases import seed_admin
    _require(s, "target")
    target = make_target(s)
    target.wait(s.wait_timeout)
    target.lock(s.lock_timeout)
    try:
        return target.retrying("seed admin", seed_admin.run, s, target)
    finally:
        target.unlock()


def cmd_verify(s: Settings) -> list[dict]:
    _require(s, "target")
    target = make_target(s)
    schema, src, _ = schema_from(s)
    try:
        target.wait(s.wait_timeout)
        if src:
            for t in schema.tables:
                verify_phase.expected_from_source(src, t, s.limit)
        results = verify_phase.run(schema, target, backup_dir=None if src else s.backup_dir, src=src,
                                   workers=s.workers)
    finally:
        if src:
            src.close()
    return results


def cmd_run(s: Settings, *, with_backup: bool = True) -> dict:
    """``run`` (with_backup) or ``restore`` (from an existing backup)."""
    _require(s, "target", "backup_dir", *(("source",) if with_backup else ()))
    share = Share.from_settings(s)
    if share and not with_backup:
        raise UsageError("--shares works with run only: each share backs up and loads its own tables")
    if share:
        s = share.settings(s)
    names = ["wait for target", "read source" if with_backup else "read backup", "init schema"]
    names += ["backup"] if with_backup else []
    names += ["restore"] + (["seed admin"] if s.seed_admin else []) + ["post-data", "verify"]
    names += ["join shares"] if share else []
    step = Steps(names)
    started = time.monotonic()
    target = make_target(s)
    ctx = {"schema": None, "partial": [], "load": {}, "verify": [], "notes": [], "errors": [], "share": share}
    source_label = s.source if with_backup else s.backup_dir
    try:
        step("wait for target")
        target.wait(s.wait_timeout)
        target.lock(s.lock_timeout, share=share and str(share.index))
        try:
            _run_phases(s, step, target, ctx, with_backup)
            if share and _report(s, "run", ctx, started, source_label, target)["exit_code"] in (0, EXIT["PARTIAL"]):
                step("join shares")
                _join(s, share, target, ctx)
        finally:
            target.unlock()
    except MigrateError as e:
        report = _report(s, "run" if with_backup else "restore", ctx, started, source_label, target,
                         failure=e)
        write(report, s.report, s.backup_dir)
        raise
    report = _report(s, "run" if with_backup else "restore", ctx, started, source_label, target)
    write(report, s.report, s.backup_dir)
    print(summary_table(report))
    if report["exit_code"]:
        raise {EXIT["VERIFY"]: VerifyError, EXIT["DATA"]: DataError,
               EXIT["PARTIAL"]: PartialError}[report["exit_code"]](report["message"])
    return report


def _run_phases(s: Settings, step: Steps, target: Target, ctx: dict, with_backup: bool) -> None:
    if with_backup:
        step("read source")
        src, schema, ctx["partial"] = open_source(s)
        ctx["schema"] = schema
        share: Share | None = ctx["share"]
        if share:  # every share reads the whole schema; it migrates its own tables
            ctx["everything"] = schema
            ctx["schema"] = schema = share.own(schema)
            if s.seed_admin and share.of.get(s.admin_table, 0) != share.index:
                s.values["seed_admin"] = False  # the share that loads the admin's table seeds it
            target.retrying("begin share", share.begin, target, ctx["everything"], schema)
        with src:
            step("init schema")
            target.retrying("init schema", init_phase.run, schema, target, replace=s.replace, restart=s.restart,
                            drop_columns=s.drop_columns)
            _fillable(s, schema)
            step("backup")
            # the converted rows also go to spill files, which this run's load sends as they are
            backup_phase.run(src.path, s.backup_dir, schema, src, s.limit, _compress(s), s.workers, spill=True,
                             partial=ctx["partial"] + ([share.partial] if share else []))
    else:
        step("read backup")
        schema, _, ctx["partial"] = schema_from(s)
        ctx["schema"] = schema
        step("init schema")
        target.retrying("init schema", init_phase.run, schema, target, replace=s.replace, restart=s.restart,
                        drop_columns=s.drop_columns)
        _fillable(s, schema)
    try:
        conversion_failure(schema, s.on_error)
        step("restore")
        fills = Fills(s, target, schema, step, ctx)
        ctx["load"] = restore_phase.load(schema, s.backup_dir, target, on_error=s.on_error,  # retries per table
                                         fills_for=fills.for_table, after_table=fills.after_table,
                                         workers=s.workers, filled_tables=set(fills.rules))
    finally:
        backup_phase.remove_spills(schema)
    if s.seed_admin and not fills.seeded:
        fills.seed()
    for t in schema.tables:
        n = ctx["load"].get(t.name, {}).get("filled")
        if n:
            ctx["notes"].append(f"table {t.name!r}: {n} NULL value(s) filled by --fill-null "
                                + ", ".join(f"{c}={v}" for c, v in fills.rules.get(t.name, {}).items()))
    step("post-data")
    notes, errors = target.retrying("post-data", restore_phase.post_data, schema, target, orphans=s.orphans,
                                   workers=s.workers, migrated=ctx.get("everything"))
    ctx["notes"] += schema.notes + [f"table {t.name!r}: {n}" for t in schema.tables for n in t.notes] + notes
    ctx["errors"] += errors
    step("verify")
    ctx["verify"] = target.retrying("verify", verify_phase.run, schema, target, backup_dir=s.backup_dir,
                                    fills_for=fills.for_table, workers=s.workers)
    structlog.contextvars.unbind_contextvars("phase")


def _join(s: Settings, share: Share, target: Target, ctx: dict) -> None:
    """This share is migrated and verified: record it done; the last one joins the shares."""
    sha256 = backup_phase.read_manifest(s.backup_dir)["source"]["sha256"]
    rows = target.retrying("finish share", share.finish, target, ctx["schema"], sha256)
    done = [r["share"] for r in rows if r["status"] == "done"]
    ctx["shares"] = {"share": share.index, "shares": share.count, "run_id": share.run_id,
                     "tables": [t.name for t in ctx["schema"].tables], "done": done,
                     "last": len(done) == share.count}
    if len(done) < share.count:
        log.info("share done; the last share to finish adds the foreign keys between shares",
                 done=len(done), shares=share.count)
        return
    notes, errors, keys = target.retrying("join shares", share.join, target, ctx["everything"], rows,
                                          orphans=s.orphans, workers=s.workers, lock_timeout=s.lock_timeout)
    ctx["shares"]["keys_between_shares"] = keys
    ctx["notes"] += notes
    ctx["errors"] += errors


class Fills:
    """--fill-null rules, with @admin resolved once the admin exists; and the seed-admin
    step, run right after the admin's table is loaded and before its children."""

    def __init__(self, s: Settings, target: Target, schema: Schema, step: Steps, ctx: dict):
        self.s, self.target, self.step, self.ctx = s, target, step, ctx
        self.rules = s.fill_rules()
        names = {t.name for t in schema.tables}
        unknown = [f"{t}.{c}" for t, cols in self.rules.items() for c in cols
                   if t not in names or c not in {col.name for col in schema.table(t).columns}]
        if unknown:
            raise UsageError(f"--fill-null names {', '.join(unknown)}, which is not a migrated column")
        self.admin_id = None
        self.seeded = False

    def seed(self, conn=None) -> None:
        from .phases import seed_admin
        self.step("seed admin")
        own = conn is None
        conn = conn or self.target.connect()
        try:
            self.admin_id, action = seed_admin.seed(self.s, self.target, conn)
        finally:
            if own:
                conn.close()
        self.seeded = True
        self.ctx["notes"].append(f"admin user {self.s.admin_username!r} {action} (id {self.admin_id})")
        structlog.contextvars.bind_contextvars(phase="restore")

    def after_table(self, t, conn) -> None:
        if self.s.seed_admin and not self.seeded and t.pg_name == self.s.admin_table:
            self.seed(conn)

    def for_table(self, t) -> dict | None:
        rules = self.rules.get(t.name)
        if not rules:
            return None
        return {c: self._admin() if v == "@admin" else v for c, v in rules.items()}

    def _admin(self):
        if self.admin_id is None:
            from .phases.seed_admin import column_map
            cols = column_map(self.s.admin_columns)
            conn = self.target.connect()
            try:
                with conn.cursor() as cur:
                    cur.execute(f"SELECT {q(cols['id'])} FROM {self.target.qualified(self.s.admin_table)} "
                                f"WHERE {q(cols['username'])} = %s", (self.s.admin_username,))
                    row = cur.fetchone()
            finally:
                conn.close()
            if row is None:
                raise UsageError(f"--fill-null ...=@admin: no admin user {self.s.admin_username!r} in the target yet",
                                 hint="add --seed-admin, or load the admin's table first")
            self.admin_id = row[0]
        return self.admin_id


def _report(s: Settings, command: str, ctx: dict, started: float, source_label, target: Target,
            failure: MigrateError | None = None) -> dict:
    schema: Schema | None = ctx["schema"]
    verified = {r["table"]: r for r in ctx["verify"]}
    tables = []
    for t in (schema.restore_order() if schema else []):
        load = ctx["load"].get(t.name, {})
        r = dict(verified.get(t.name) or {"table": t.name, "pg_name": t.pg_name, "source_rows": t.rows,
                                            "target_rows": load.get("loaded"), "verdict": "not verified",
                                            "problems": []})
        r["rejected"] = load.get("rejected", 0)
        r["filled"] = load.get("filled", 0)
        r["seconds"] = load.get("seconds", 0.0)
        if load.get("skipped"):
            r["load"] = load["skipped"]
        r["columns"] = [{"name": c.name, "pg_name": c.pg_name, "declared": c.declared, "pg_type": c.pg_type,
                         "decision": c.type_reason} for c in t.columns if c.type_reason or c.pg_name != c.name]
        r["notes"] = t.notes
        tables.append(r)
    rejected = sum(t["rejected"] for t in tables)
    if failure is not None:
        status, code, message = "failed", failure.exit_code, failure.message
    elif any(t["verdict"] != "ok" for t in tables):
        bad = [t["table"] for t in tables if t["verdict"] != "ok"]
        status, code, message = "failed", EXIT["VERIFY"], f"verification failed for {len(bad)} table(s): {', '.join(bad[:10])}"
    elif ctx["errors"] or rejected:
        status, code = "failed", EXIT["DATA"]
        message = "; ".join(([f"{rejected} row(s) rejected (see rejects/ in the backup directory)"] if rejected else [])
                            + ([f"{len(ctx['errors'])} constraint error(s)"] if ctx["errors"] else []))
    elif ctx["partial"]:
        status, code, message = "partial", EXIT["PARTIAL"], "migrated and verified, but only part of the source: " \
            + "; ".join(ctx["partial"][:5])
    else:
        status, code = "ok", EXIT["OK"]
        rows = sum((t.get("target_rows") or 0) - (t.get("seeded_rows") or 0) for t in tables)
        message = f"{len(tables)} table(s), {rows:,} rows migrated and verified"
    shares = ctx.get("shares")
    if ctx.get("share") is not None:
        message = f"{ctx['share'].label}: {message}"
    if shares and shares["last"] and failure is None:
        message += (f"; the last of {shares['shares']} shares to finish: all are done, "
                    f"{shares.get('keys_between_shares', 0)} foreign key(s) between shares validated")
    elif shares and failure is None:
        message += (f"; {len(shares['done'])} of {shares['shares']} shares done, the last to finish adds "
                    "the foreign keys between shares")
    return build(command, status=status, exit_code=code, message=message, tables=tables,
                 notes=ctx["notes"], errors=ctx["errors"],
                 skipped=[sk.__dict__ for sk in (schema.skipped if schema else [])],
                 source=source_label, target=target.display, partial=ctx["partial"],
                 seconds=time.monotonic() - started, shares=ctx.get("shares"))
