"""Phase: backup. Source -> one JSON Lines file per table + manifest.json (written last).

A crashed backup never looks complete: an old manifest is removed first, each
table is written to a temporary file and renamed, and the manifest is renamed
into place only when every table is on disk. The directory alone is enough for
``restore`` and ``verify``.
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import os
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
from ..types import InvalidText, bytes_hash, fold

log = structlog.get_logger()
MANIFEST = "manifest.json"
FORMAT = 1
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


def prepare_dir(backup_dir: str) -> None:
    try:
        os.makedirs(os.path.join(backup_dir, "tables"), exist_ok=True)
        manifest = os.path.join(backup_dir, MANIFEST)
        if os.path.exists(manifest):
            os.remove(manifest)  # from now on this directory is an incomplete backup
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


def backup_table(src: SourceDB, t: Table, path: str, limit: int | None = None) -> None:
    """Stream one table to path (atomically), filling its checksums and error counts."""
    for marking in (False, True):
        try:
            _write_table(src, t, path, limit, marking)
            return
        except NeedsMarking:
            log.warning("table holds TEXT that is not valid UTF-8; kept byte-exact and marked", table=t.name)


def _write_table(src: SourceDB, t: Table, path: str, limit: int | None, marking: bool) -> None:
    nonfinite = [i for i, c in enumerate(t.columns) if c.census.nonfinite]
    encode = encoder(nonfinite)
    conv = RowConverter(t)
    rows = raw = content = 0
    t.conversion_errors = 0
    errors: list = []
    invalid = [0] * len(t.columns)
    tmp = path + ".tmp"
    progress = current()
    try:
        with open_table_file(tmp, "wb", gz=path.endswith(".gz")) as f:
            for batch in src.rows(t, limit=limit, marking=marking):
                if marking:
                    for row in batch:
                        for i, v in enumerate(row):
                            if type(v) is InvalidText:
                                invalid[i] += 1
                out = [encode(r) for r in batch]
                raw += sum(map(bytes_hash, out))
                out.append(b"")
                f.write(b"\n".join(out))
                n_err = len(errors)
                content += conv.hash_lines(conv.lines(batch, rows, errors))
                t.conversion_errors += len(errors) - n_err
                del errors[ERROR_SAMPLES:]  # keep a sample, count them all
                rows += len(batch)
                progress.advance(len(batch))
        with open(tmp, "rb+") as f:  # (a gzip file is closed first: its trailer is written on close)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise _fail(e, path) from None
    for c, n in zip(t.columns, invalid):
        c.census.invalid_utf8 = n
    t.rows = rows
    t.raw_checksum = fold(raw)
    t.checksum = fold(content)
    t.checksum_types = t.types_signature()
    t.error_samples = [e.to_dict() for e, _n in errors]


def run(source: str, backup_dir: str, schema: Schema, src: SourceDB, limit: int | None = None,
        compress: str | None = None) -> Schema:
    """Write the backup of the tables in ``schema`` (already read and decided)."""
    prepare_dir(backup_dir)
    t0 = time.monotonic()
    progress = current()
    progress.start_phase("backup", sum(min(t.rows, limit) if limit is not None else t.rows for t in schema.tables))
    for i, t in enumerate(schema.tables, 1):
        t.file = table_file(i, t, compress)
        start = time.monotonic()
        structlog.contextvars.bind_contextvars(table=t.name)
        progress.start_table(t.name, t.rows if limit is None else min(t.rows, limit))
        backup_table(src, t, os.path.join(backup_dir, t.file), limit)
        log.info("table backed up", table=t.name, rows=t.rows, seconds=round(time.monotonic() - start, 3),
                 conversion_errors=t.conversion_errors)
    structlog.contextvars.unbind_contextvars("table")
    progress.end_phase()
    write_manifest(backup_dir, source, schema, limit)
    log.info("backup complete", backup_dir=backup_dir, tables=len(schema.tables),
             seconds=round(time.monotonic() - t0, 3))
    return schema


def write_manifest(backup_dir: str, source: str, schema: Schema, limit: int | None) -> None:
    manifest = {
        "format": FORMAT,
        "tool": "migrate",
        "version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {"path": os.path.basename(source), "sha256": sha256_file(source),
                   "size": os.path.getsize(source), "user_version": schema.user_version},
        "partial": {"limit": limit} if limit is not None else None,
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
        raise BackupError(f"backup {path!r}: manifest format {m.get('format')!r}, this version reads {FORMAT}")
    return m


def schema_from_manifest(m: dict) -> Schema:
    from ..schema import Skipped
    return Schema(tables=[Table.from_dict(t) for t in m["tables"]],
                  skipped=[Skipped(**s) for s in m.get("skipped", [])],
                  user_version=m["source"].get("user_version", 0), ddl=m.get("ddl", []))
