"""The command line. One function per command (in pipeline.py); this module only
parses, prints, and is the one place that turns an error into an exit code."""
from __future__ import annotations

import argparse
import signal
import sys
import traceback

import orjson
import structlog

from . import __version__, log as logging_setup, pipeline, progress
from .errors import EXIT, EXIT_CODES, MigrateError, VerifyError
from .settings import Settings

EPILOG_EXIT = "exit codes:\n" + "\n".join(f"  {c:>3} {n:<12} {m}" for c, n, m, _ in EXIT_CODES)


def _common(p: argparse.ArgumentParser, *, source=False, target=False, backup=False, report=False) -> None:
    if source:
        p.add_argument("--source", help="SQLite file path or sqlite:/// URL [MIGRATE_SOURCE]")
        p.add_argument("--source-timeout", type=float, help="seconds to wait while another process "
                                                            "locks the source (default 30) [MIGRATE_SOURCE_TIMEOUT]")
    if target:
        p.add_argument("--target", help="PostgreSQL URL; put the password in MIGRATE_TARGET_PASSWORD_FILE "
                                        "or MIGRATE_TARGET_PASSWORD, not here [MIGRATE_TARGET, DATABASE_URL]")
        p.add_argument("--target-schema", help="schema the tables land in (default public) [MIGRATE_TARGET_SCHEMA]")
        p.add_argument("--wait-timeout", type=float, help="seconds to wait for the target to accept connections "
                                                          "(default 60) [MIGRATE_WAIT_TIMEOUT]")
        p.add_argument("--lock-timeout", type=float, help="seconds to wait for another run's lock (default 60) "
                                                          "[MIGRATE_LOCK_TIMEOUT]")
        p.add_argument("--connect-timeout", type=int, help="seconds per connection attempt (default 10)")
        p.add_argument("--statement-timeout", type=float, help="seconds any one statement may run (default: no limit)")
    if backup:
        p.add_argument("--backup-dir", help="directory of the JSON backup [MIGRATE_BACKUP_DIR]")
        p.add_argument("--backup-compress", choices=("none", "gzip"),
                       help="compress the table files (gzip level 1); restore reads either [MIGRATE_BACKUP_COMPRESS]")
    if report:
        p.add_argument("--report", help="write the machine-readable report here (JSON) [MIGRATE_REPORT]")
    p.add_argument("--table", dest="tables", action="append", metavar="GLOB",
                   help="only tables matching (repeatable) [MIGRATE_TABLES, comma-separated]")
    p.add_argument("--exclude-table", dest="exclude_tables", action="append", metavar="GLOB",
                   help="leave out tables matching (repeatable) [MIGRATE_EXCLUDE_TABLES]")
    p.add_argument("--column-type", dest="column_types", action="append", metavar="TABLE.COLUMN=TYPE",
                   help="force a column's target type, e.g. notes.body=bytea (repeatable)")
    if target:
        p.add_argument("--schema", dest="schema_file", metavar="FILE.sql",
                       help="the application's own PostgreSQL DDL instead of the derived schema [MIGRATE_SCHEMA_FILE]")
        p.add_argument("--schema-from", metavar="MODULE:ATTRIBUTE",
                       help="the application's SQLAlchemy/SQLModel metadata, e.g. app.models:metadata "
                            "[MIGRATE_SCHEMA_FROM]")
        p.add_argument("--drop-column", dest="drop_columns", action="append", metavar="TABLE.COLUMN",
                       help="a source column the application's schema no longer has (repeatable)")
    p.add_argument("--log-format", choices=("auto", "json", "console"),
                   help="auto: JSON lines unless stderr is a terminal [MIGRATE_LOG_FORMAT]")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="[MIGRATE_LOG_LEVEL]")
    p.add_argument("--progress", choices=("auto", "bars", "events", "off"),
                   help="auto: live bars on a terminal, else a 'progress' log event every "
                        "--progress-interval seconds [MIGRATE_PROGRESS]")
    p.add_argument("--progress-interval", type=float, help="seconds between progress events (default 5) "
                                                           "[MIGRATE_PROGRESS_INTERVAL]")


def _write_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--replace", action="store_true", default=None,
                   help="drop and recreate existing target tables this tool did not create [MIGRATE_REPLACE]")
    p.add_argument("--restart", action="store_true", default=None,
                   help="ignore earlier progress: recreate and reload every table [MIGRATE_RESTART]")
    p.add_argument("--on-error", choices=("fail", "reject"),
                   help="a value that cannot be converted: fail (default, nothing of the table committed) or "
                        "reject (write the row to rejects/, load the rest, exit 5) [MIGRATE_ON_ERROR]")
    p.add_argument("--orphans", choices=("fail", "not-valid"),
                   help="rows whose foreign key has no parent: fail (default) or add the key NOT VALID "
                        "[MIGRATE_ORPHANS]")
    p.add_argument("--limit", type=int, help="trial run: at most N rows per table (reported as partial)")
    _workers_opt(p)


def _workers_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, metavar="N",
                   help="processes working at once on tables and on pieces of big tables, biggest first: the "
                        "census, the backup (a WAL-mode source: one process) and the load (default 2; 1 = one "
                        "after another; the application's schema always loads one after another) [MIGRATE_WORKERS]")


def _admin_opts(p: argparse.ArgumentParser, seeding_flag: bool) -> None:
    if seeding_flag:
        p.add_argument("--seed-admin", action="store_true", default=None,
                       help="seed the admin user right after its table loads (see seed-admin) [MIGRATE_SEED_ADMIN]")
        p.add_argument("--fill-null", dest="fill_null", action="append", metavar="TABLE.COLUMN=VALUE",
                       help="put VALUE where the column is NULL; VALUE @admin is the admin user's id "
                            "(repeatable; reported) [MIGRATE_FILL_NULL]")
    p.add_argument("--admin-table", help="the application's user table (default user) [MIGRATE_ADMIN_TABLE]")
    p.add_argument("--admin-username", help="default admin [MIGRATE_ADMIN_USERNAME]")
    p.add_argument("--admin-email", help="default admin@example.com [MIGRATE_ADMIN_EMAIL]")
    p.add_argument("--admin-full-name", help="default Administrator [MIGRATE_ADMIN_FULL_NAME]")
    p.add_argument("--admin-role", help="default admin [MIGRATE_ADMIN_ROLE]")
    p.add_argument("--admin-column", dest="admin_columns", action="append", metavar="KEY=COLUMN",
                   help="column names when they differ from id, username, email, hashed_password, full_name, "
                        "role, is_active, created_at [MIGRATE_ADMIN_COLUMNS]")
    p.add_argument("--update", action="store_true", default=None,
                   help="update an existing admin (password, email, name, role) instead of leaving it alone")
    p.add_argument("--generate-password", metavar="FILE",
                   help="no password configured: generate one into FILE (mode 0600)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m migrate", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Move a SQLite database into PostgreSQL losslessly, prove it, and say so honestly.",
        epilog=EPILOG_EXIT)
    parser.add_argument("--version", action="version", version=f"migrate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def cmd(name, help_, example):
        return sub.add_parser(name, help=help_, description=help_, epilog=f"example:\n  {example}\n\n{EPILOG_EXIT}",
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = cmd("run", "the whole pipeline: wait, init schema, backup, restore, post-data, verify, report",
            "python -m migrate run --source app.db --target postgresql://app@db:5432/app --backup-dir ./backup "
            "--report report.json")
    _common(p, source=True, target=True, backup=True, report=True)
    _write_opts(p)
    _admin_opts(p, seeding_flag=True)
    p.add_argument("--shares", type=int, metavar="N",
                   help="this pod migrates one of N shares of the tables; the last share to finish adds the foreign "
                        "keys between shares (README: More than one pod) [MIGRATE_SHARES]")
    p.add_argument("--share-index", type=int, metavar="I",
                   help="which share, 0..N-1 [MIGRATE_SHARE_INDEX, JOB_COMPLETION_INDEX]")
    p.add_argument("--run-id", metavar="ID",
                   help="names one migration split into shares: the same in every share, new for the next "
                        "[MIGRATE_RUN_ID]")
    p = cmd("backup", "write the JSON backup (one JSON Lines file per table + manifest.json)",
            "python -m migrate backup --source app.db --backup-dir ./backup")
    _common(p, source=True, backup=True)
    p.add_argument("--limit", type=int, help="trial: at most N rows per table (the backup is marked partial)")
    _workers_opt(p)
    p = cmd("init-schema", "create the target tables from the source or a backup",
            "python -m migrate init-schema --source app.db --target postgresql://app@db/app")
    _common(p, source=True, target=True, backup=True)
    p.add_argument("--replace", action="store_true", default=None, help="drop tables this tool did not create")
    p.add_argument("--restart", action="store_true", default=None, help="recreate tables created earlier")
    p = cmd("restore", "restore a backup on its own: init schema, load, post-data, verify",
            "python -m migrate restore --backup-dir ./backup --target postgresql://app@db/app")
    _common(p, target=True, backup=True, report=True)
    _write_opts(p)
    _admin_opts(p, seeding_flag=True)
    p = cmd("seed-admin", "create the application's admin user if absent (idempotent); password from "
                          "MIGRATE_ADMIN_PASSWORD_FILE or MIGRATE_ADMIN_PASSWORD, stored as a bcrypt hash",
            "MIGRATE_ADMIN_PASSWORD_FILE=/run/secrets/admin python -m migrate seed-admin --target postgresql://app@db/app")
    _common(p, target=True)
    _admin_opts(p, seeding_flag=False)
    p = cmd("verify", "compare counts and content checksums of source (or backup) and target",
            "python -m migrate verify --source app.db --target postgresql://app@db/app")
    _common(p, source=True, target=True, backup=True, report=True)
    p.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    _workers_opt(p)
    p = cmd("plan", "dry run: restore order, type mapping, census of odd values, orphans; writes nothing",
            "python -m migrate plan --source app.db --json")
    _common(p, source=True)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--shares", type=int, metavar="N", help="show how run --shares N would split the tables "
                                                           "[MIGRATE_SHARES]")
    _workers_opt(p)
    p.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    return parser


def _on_sigterm(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--dry-run" in argv:  # alias: `run --dry-run` == `plan`
        argv = ["plan"] + [a for a in argv if a not in ("--dry-run", "run")]
    args = build_parser().parse_args(argv)  # usage errors: argparse prints them and exits 2
    flags = {k: v for k, v in vars(args).items() if k != "command"}
    log = structlog.get_logger()
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        settings = Settings.resolve(flags)
        logging_setup.configure(settings.log_format, settings.log_level)
        mode = settings.progress
        if mode == "auto":
            mode = "bars" if sys.stderr.isatty() and settings.log_format != "json" else "events"
        progress.configure(mode, settings.progress_interval)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(command=args.command)
        return _dispatch(args.command, settings, flags)
    except MigrateError as e:
        log.error(e.message, exit_code=e.exit_code, error=type(e).__name__)
        print(logging_setup.mask(f"error: {e.message}"), file=sys.stderr)
        if e.hint:
            print(logging_setup.mask(f"hint: {e.hint}"), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; every table is either fully loaded or untouched: run again to resume",
              file=sys.stderr)
        return EXIT["INTERRUPTED"]
    except Exception as e:  # a bug: say so plainly, keep the traceback out of the operator's face
        log.debug("traceback", traceback=traceback.format_exc())
        print(logging_setup.mask(f"error: internal error: {type(e).__name__}: {e}"), file=sys.stderr)
        print("hint: this is a bug in migrate; rerun with --log-level debug and report the log", file=sys.stderr)
        return EXIT["INTERNAL"]


def _dispatch(command: str, s: Settings, flags: dict) -> int:
    if command == "run":
        pipeline.cmd_run(s, with_backup=True)
    elif command == "restore":
        pipeline.cmd_run(s, with_backup=False)
    elif command == "backup":
        out = pipeline.cmd_backup(s)
        print(f"backup written to {s.backup_dir}: {len(out['tables'])} table(s), "
              f"{sum(t['rows'] for t in out['tables']):,} rows"
              + (f"; {out['conversion_errors']} value(s) will not convert to their target type "
                 "(see manifest.json error_samples)" if out["conversion_errors"] else ""))
    elif command == "init-schema":
        out = pipeline.cmd_init_schema(s)
        for name, what in out.items():
            print(f"{what:<8} {name}")
    elif command == "seed-admin":
        print(pipeline.cmd_seed_admin(s))
    elif command == "verify":
        results = pipeline.cmd_verify(s)
        bad = [r for r in results if r["verdict"] != "ok"]
        for r in results:
            print(f"{r['verdict']:<16} {r['table']} ({r['target_rows']} rows)"
                  + "".join(f"\n    {p}" for p in r["problems"]))
        if s.report:
            with open(s.report, "wb") as f:
                f.write(orjson.dumps({"tables": results, "ok": not bad}, option=orjson.OPT_INDENT_2))
        if bad:
            raise VerifyError(f"{len(bad)} of {len(results)} table(s) differ: {', '.join(r['table'] for r in bad[:10])}")
        print(f"OK: {len(results)} table(s) identical")
    elif command == "plan":
        from .plan import render
        plan = pipeline.cmd_plan(s)
        print(orjson.dumps(plan, option=orjson.OPT_INDENT_2, default=str).decode() if flags.get("json") else render(plan))
    return 0
