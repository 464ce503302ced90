"""Phase: backup. Source -> one JSON Lines file per table + manifest.json (written last).

A crashed backup never looks complete: an old manifest is removed first, each
table is written to a temporary file and renamed, and the manifest is renamed
into place only when every table is on disk. The directory alone is enough for
``restore`` and ``verify``.
"""
from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
import shutil
import time
from datetime import datetime, timezone

import orjson
import structlog

from .. import __version__
from ..codec import encoder
from ..convert import RowConverter
from ..errors import BackupError
from ..progress import current
from ..schema import Schema, Table
from ..sqlite_source import NeedsMarking, SourceDB
from ..types import InvalidText, fold
from .. import workers as workers_module
from ..workers import JOB

log = structlog.get_logger()
MANIFEST = "manifest.json"
SPILL = ".copy"  # a table file's converted rows as COPY text, for the load of the same run
FORMAT = 2  # 2: each table file's SHA-256 (1 summed an md5 per JSON line)
ERROR_SAMPLES = 20


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fail(e: OSError, path: str) -> BackupError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return BackupError(f"backup {path!r}: disk full ({e.strerror}); the backup is incomplete "
                           "and has no manifest")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return BackupError(f"backup {path!r}: not writable ({e.strerror})")
    return BackupError(f"backup {path!r}: {e.strerror or e}")


def remove_spills(schema: Schema) -> None:
    for t in schema.tables:
        if getattr(t, "spill", None):
            _remove(t.spill)
            t.spill = None


def prepare_dir(backup_dir: str) -> None:
    try:
        os.makedirs(os.path.join(backup_dir, "tables"), exist_ok=True)
        manifest = os.path.join(backup_dir, MANIFEST)
        if os.path.exists(manifest):
            os.remove(manifest)  # from now on this directory is an incomplete backup
        tables = os.path.join(backup_dir, "tables")
        for name in os.listdir(tables):
            if name.endswith((".tmp", SPILL)) or ".part" in name:  # left by a crashed backup
                os.remove(os.path.join(tables, name))
    except OSError as e:
        raise _fail(e, backup_dir) from None


def table_file(index: int, t: Table, compress: str | None = None) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in t.name)[:40]
    return f"tables/{index:04d}-{safe}.jsonl" + (".gz" if compress == "gzip" else "")


def open_table_file(path: str, mode: str = "rb", gz: bool | None = None):
    """A backup table file, gzip-compressed when its name ends in .gz (--backup-compress gzip)."""
    if path.endswith(".gz") if gz is None else gz:
        return gzip.open(path, mode, compresslevel=1) if "w" in mode else gzip.open(path, mode)
    return open(path, mode)


def backup_table(src: SourceDB, t: Table, path: str, limit: int | None = None, spill: bool = False) -> None:
    """Stream one table to path (atomically), filling its checksums and error counts."""
    _finish(t, [_write_piece(src, t, path, limit, spill=spill)], path, spill)


def _write_piece(src: SourceDB, t: Table, path: str, limit: int | None = None,
                 rowids: tuple[int, int] | None = None, spill: bool = False) -> dict:
    """The rows of t (those in a rowid range of it) to path, atomically; its counts and sums.
    With spill, also the converted rows as COPY text to path + SPILL (see run)."""
    for marking in (False, True):
        try:
            return _write(src, t, path, limit, marking, rowids, spill)
        except NeedsMarking:
            log.warning("table holds TEXT that is not valid UTF-8; kept byte-exact and marked", table=t.name)
    raise AssertionError("unreachable")


def _write(src: SourceDB, t: Table, path: str, limit: int | None, marking: bool,
           rowids: tuple[int, int] | None, spill: bool) -> dict:
    nonfinite = [i for i, c in enumerate(t.columns) if c.census.nonfinite]
    encode = encoder(nonfinite)
    conv = RowConverter(t)
    rows = content = n_errors = 0
    errors: list = []
    invalid = [0] * len(t.columns)
    tmp, spill_tmp = path + ".tmp", path + SPILL + ".tmp"
    progress = current()
    try:
        with open_table_file(tmp, "wb", gz=t.file.endswith(".gz")) as f, \
                (open(spill_tmp, "wb") if spill else contextlib.nullcontext()) as spilled:
            for batch in src.rows(t, limit=limit, marking=marking, rowids=rowids):
                if marking:
                    for row in batch:
                        for i, v in enumerate(row):
                            if type(v) is InvalidText:
                                invalid[i] += 1
                out = [encode(r) for r in batch]
                out.append(b"")
                f.write(b"\n".join(out))
                n_err = len(errors)
                lines, h = conv.converted(batch, rows, errors)
                content += h
                if spill:
                    lines.append("")
                    spilled.write("\n".join(lines).encode("utf-8"))
                n_errors += len(errors) - n_err
                del errors[ERROR_SAMPLES:]  # keep a sample, count them all
                rows += len(batch)
                progress.advance(len(batch))
        with open(tmp, "rb+") as f:  # (a gzip file is closed first: its trailer is written on close)
            os.fsync(f.fileno())
        os.replace(tmp, path)
        if spill:
            os.replace(spill_tmp, path + SPILL)  # transient: no fsync
    except OSError as e:
        _remove(tmp)
        _remove(spill_tmp)
        raise _fail(e, path) from None
    return {"rows": rows, "content": content, "errors": n_errors, "invalid": invalid,
            "samples": [e.to_dict() for e, _n in errors]}


def _finish(t: Table, pieces: list[dict], path: str, spill: bool) -> None:
    """A table's figures from those of its pieces (in rowid order). A spill file is kept
    (t.spill) only for a table that converted without an error."""
    for i, c in enumerate(t.columns):
        c.census.invalid_utf8 = sum(p["invalid"][i] for p in pieces)
    t.rows = sum(p["rows"] for p in pieces)
    try:
        t.file_sha256 = sha256_file(path)  # read back from the page cache: 0.1 s per 200 MB
    except OSError as e:
        raise _fail(e, path) from None
    t.checksum = fold(sum(p["content"] for p in pieces))
    t.checksum_types = t.types_signature()
    t.conversion_errors = sum(p["errors"] for p in pieces)
    t.error_samples = [e for p in pieces for e in p["samples"]][:ERROR_SAMPLES]
    t.spill = None
    if spill and t.conversion_errors == 0:
        t.spill = path + SPILL
    elif spill:
        _remove(path + SPILL)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def run(source: str, backup_dir: str, schema: Schema, src: SourceDB, limit: int | None = None,
        compress: str | None = None, workers: int = 1, spill: bool = False,
        partial: list[str] | None = None) -> Schema:
    """Write the backup of the tables in ``schema`` (already read and decided). With
    workers > 1 and a source whose snapshot other connections share (a rollback-journal
    database: see SourceDB.shares_snapshot), tables and rowid ranges of big tables are
    written at once by worker processes, biggest first; a table's pieces are joined in
    rowid order into its one file.

    spill (``run``, which restores right after): each table's converted rows are also
    written as COPY text next to its JSON file (t.spill), so the load sends them as they
    are instead of decoding and converting the JSON again; remove_spills() deletes them.
    Not with a compressed backup (disk is the point there).

    partial: why the backup holds only part of the source (filters, --limit, a share of a
    run split across pods): kept in the manifest, so a restore of it says so (exit 9)."""
    spill = spill and not compress
    prepare_dir(backup_dir)
    t0 = time.monotonic()
    source_hash = sha256_meanwhile(source)  # for the manifest
    progress = current()
    progress.start_phase("backup", sum(min(t.rows, limit) if limit is not None else t.rows for t in schema.tables))
    for i, t in enumerate(schema.tables, 1):
        t.file = table_file(i, t, compress)
    parallel = workers > 1 and limit is None and bool(schema.tables)
    shared = parallel and src.shares_snapshot()
    if parallel and not shared:
        log.info("source is in WAL mode: backed up by one process (other connections might not read "
                 "the same snapshot)")
    done = shared and _backup_parallel(src, schema, backup_dir, workers, spill)
    for t in [] if done else schema.tables:
        start = time.monotonic()
        structlog.contextvars.bind_contextvars(table=t.name)
        progress.start_table(t.name, t.rows if limit is None else min(t.rows, limit))
        backup_table(src, t, os.path.join(backup_dir, t.file), limit, spill)
        _backed_up(t, time.monotonic() - start)
    structlog.contextvars.unbind_contextvars("table")
    progress.end_phase()
    try:
        source_sha256 = source_hash()
    except OSError as e:
        raise _fail(e, source) from None
    write_manifest(backup_dir, source, schema, limit, source_sha256, partial)
    log.info("backup complete", backup_dir=backup_dir, tables=len(schema.tables),
             seconds=round(time.monotonic() - t0, 3))
    return schema


def _backed_up(t: Table, seconds: float, **extra) -> None:
    log.info("table backed up", table=t.name, rows=t.rows, seconds=round(seconds, 3),
             conversion_errors=t.conversion_errors, **extra)


def _backup_parallel(src: SourceDB, schema: Schema, backup_dir: str, workers: int, spill: bool) -> bool:
    """Pieces (a table, or a rowid range of a big one with a primary key: row keys in error
    messages need no row number) in worker processes. False when no worker could start."""
    work, pieces, part_files = [], {}, {}
    for t in sorted(schema.tables, key=lambda t: -t.rows):
        ranges = src.ranges(t, workers) if t.pk else [None]
        path = os.path.join(backup_dir, t.file)
        paths = [path] if len(ranges) == 1 else [f"{path}.part{k}" for k in range(len(ranges))]
        pieces[t.name], part_files[t.name] = [None] * len(ranges), paths
        work += [(t.name, k, r, p) for k, (r, p) in enumerate(zip(ranges, paths))]
    JOB.update(src=src, tables={t.name: t for t in schema.tables}, spill=spill)
    start = time.monotonic()

    def done(item, outcome, failed: bool) -> None:
        name, k, _r, _p = item
        got = pieces[name]
        got[k] = outcome
        if failed or any(p is None for p in got):
            return
        t = schema.table(name)
        path = os.path.join(backup_dir, t.file)
        if len(got) > 1:
            _join(part_files[name], path)
            if spill:
                _join([p + SPILL for p in part_files[name]], path + SPILL, durable=False)
        _finish(t, got, path, spill)
        _backed_up(t, time.monotonic() - start, **({"pieces": len(got)} if len(got) > 1 else {}))
    try:
        return workers_module.run(workers, _worker_backup, work, done)
    finally:
        for paths in part_files.values():
            for p in paths if len(paths) > 1 else []:
                _remove(p)
                _remove(p + SPILL)


def _worker_backup(name: str, _k: int, rowids: tuple[int, int] | None, path: str) -> dict:
    t = JOB["tables"][name]
    current().start_table(t.name, t.rows)
    structlog.contextvars.bind_contextvars(table=t.name)
    src = JOB["src"].again()  # a connection of this process's own, on the same snapshot
    try:
        return _write_piece(src, t, path, rowids=rowids, spill=JOB["spill"])
    finally:
        src.close()


def _join(parts: list[str], path: str, durable: bool = True) -> None:
    """Part files, in order, into one file (atomically). Gzip parts join as one valid gzip
    file of several members."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
            out.flush()
            if durable:
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise _fail(e, path) from None


def sha256_meanwhile(path: str):
    """sha256_file(path) computed in a thread (file reads and hashlib release the GIL) while
    the caller goes on; returns a function that waits for the hex digest (or raises the
    OSError met)."""
    import threading
    result: dict = {}

    def work():
        try:
            result["hex"] = sha256_file(path)
        except OSError as e:
            result["error"] = e
    th = threading.Thread(target=work, daemon=True)
    th.start()

    def get() -> str:
        th.join()
        if "error" in result:
            raise result["error"]
        return result["hex"]
    return get


def write_manifest(backup_dir: str, source: str, schema: Schema, limit: int | None, source_sha256: str,
                   partial: list[str] | None = None) -> None:
    manifest = {
        "format": FORMAT,
        "tool": "migrate",
        "version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {"path": os.path.basename(source), "sha256": source_sha256,
                   "size": os.path.getsize(source), "user_version": schema.user_version},
        "partial": {"limit": limit, "reasons": partial or []} if limit is not None or partial else None,
        "ddl": schema.ddl,
        "tables": [t.to_dict() for t in schema.tables],
        "skipped": [s.__dict__ for s in schema.skipped],
    }
    path = os.path.join(backup_dir, MANIFEST)
    try:
        with open(path + ".tmp", "wb") as f:
            f.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".tmp", path)
    except OSError as e:
        raise _fail(e, path) from None


def read_manifest(backup_dir: str) -> dict:
    path = os.path.join(backup_dir, MANIFEST)
    if not os.path.isdir(backup_dir):
        raise BackupError(f"backup directory {backup_dir!r} does not exist")
    if not os.path.exists(path):
        raise BackupError(f"backup {backup_dir!r} is incomplete: no {MANIFEST} "
                          "(the backup crashed or is still running); run backup again")
    try:
        with open(path, "rb") as f:
            m = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError) as e:
        raise BackupError(f"backup {path!r}: unreadable manifest ({e})") from None
    if m.get("format") != FORMAT:
        raise BackupError(f"backup {path!r}: manifest format {m.get('format')!r}, this version reads {FORMAT}",
                          hint="write the backup again with this version (`backup` or `run`)")
    return m


def schema_from_manifest(m: dict) -> Schema:
    from ..schema import Skipped
    return Schema(tables=[Table.from_dict(t) for t in m["tables"]],
                  skipped=[Skipped(**s) for s in m.get("skipped", [])],
                  user_version=m["source"].get("user_version", 0), ddl=m.get("ddl", []))
