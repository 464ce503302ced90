"""The migration's model of one database: tables, columns, keys, indexes, and their
target names and types. Built from SQLite (``sqlite_source.read_schema``) or from a
backup's manifest, so every later phase works from either."""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

from .types import Census, decide

PG_MAX_IDENT = 63  # NAMEDATALEN - 1 bytes


def pg_ident(name: str) -> str:
    """The PostgreSQL name for a SQLite name: unchanged up to 63 bytes, else a
    deterministic, collision-free shortening (prefix + '_' + 8 hex of sha1)."""
    raw = name.encode("utf-8")
    if len(raw) <= PG_MAX_IDENT:
        return name
    digest = hashlib.sha1(raw).hexdigest()[:8]
    prefix = raw[: PG_MAX_IDENT - 9].decode("utf-8", errors="ignore")
    return f"{prefix}_{digest}"


def q(name: str) -> str:
    """Quote one SQL identifier, always (PostgreSQL and SQLite agree on this form)."""
    return '"' + name.replace('"', '""') + '"'


@dataclass
class Column:
    name: str
    declared: str
    notnull: bool
    default: str | None
    pk: int  # position in the primary key, 0 = not part of it
    census: Census = field(default_factory=Census)
    pg_name: str = ""
    pg_type: str = ""
    type_reason: str | None = None
    identity: bool = False
    max_length: int | None = None  # varchar(n) of the application's schema
    app_notnull: bool = False  # NOT NULL in the application's schema (SQLite may hold NULLs)

    def decide(self, override: str | None = None) -> None:
        self.pg_name = pg_ident(self.name)
        if override:
            self.pg_type, self.type_reason = override, "set by --column-type"
        else:
            self.pg_type, self.type_reason = decide(self.declared, self.census)


@dataclass
class Index:
    name: str
    columns: list[str]
    unique: bool
    origin: str  # 'c' CREATE INDEX, 'u' UNIQUE constraint, 'pk'
    skipped: str | None = None  # why it is not created (expression, partial...)
    sql: str | None = None


@dataclass
class ForeignKey:
    columns: list[str]
    ref_table: str
    ref_columns: list[str]
    on_update: str
    on_delete: str
    skipped: str | None = None


@dataclass
class Table:
    name: str
    columns: list[Column]
    indexes: list[Index] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    without_rowid: bool = False
    # how SQL reaches the rowid ('rowid', '_rowid_' or 'oid', the first no column shadows);
    # None: no rowid to cut the table at (WITHOUT ROWID, virtual, all three names taken)
    rowid: str | None = "rowid"
    rows: int = 0
    sql: str = ""
    autoincrement_seq: int | None = None  # sqlite_sequence.seq, if AUTOINCREMENT
    pg_name: str = ""
    file: str = ""
    notes: list[str] = field(default_factory=list)
    # filled by the backup pass
    checksum: str = ""  # expected target content: sum of md5(COPY line), see types.row_hash_sql
    file_sha256: str = ""  # the backup file itself, as stored (compressed or not)
    conversion_errors: int = 0
    error_samples: list[dict] = field(default_factory=list)
    checksum_types: str = ""  # the target types the checksum was computed for

    def converted_by_backup(self) -> bool:
        """The backup converted every row to exactly these target types, without an error."""
        return self.conversion_errors == 0 and self.checksum_types == self.types_signature()

    def types_signature(self) -> str:
        return ",".join(f"{c.name}:{c.pg_type}:{c.max_length or ''}:{int(c.app_notnull)}" for c in self.columns)

    @property
    def pk(self) -> list[Column]:
        return sorted((c for c in self.columns if c.pk), key=lambda c: c.pk)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Table":
        d = dict(d)
        d["columns"] = [Column(**{**c, "census": Census(**c["census"])}) for c in d["columns"]]
        d["indexes"] = [Index(**i) for i in d["indexes"]]
        d["foreign_keys"] = [ForeignKey(**f) for f in d["foreign_keys"]]
        return cls(**d)


@dataclass
class Skipped:
    name: str
    kind: str  # table, view, trigger, virtual table...
    reason: str


@dataclass
class Schema:
    tables: list[Table]
    skipped: list[Skipped] = field(default_factory=list)
    user_version: int = 0
    ddl: list[str] = field(default_factory=list)
    app_ddl: str | None = None  # --schema / --schema-from: the application's own DDL
    notes: list[str] = field(default_factory=list)

    def table(self, name: str) -> Table:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(name)

    def decide(self, overrides: dict[tuple[str, str], str] | None = None) -> None:
        """Target names and types for every table and column (census already taken)."""
        overrides = dict(overrides or {})
        for t in self.tables:
            t.pg_name = pg_ident(t.name)
            for c in t.columns:
                c.decide(overrides.pop((t.name, c.name), None))
        if overrides:
            (tname, cname), _ = next(iter(overrides.items()))
            from .errors import UsageError
            raise UsageError(f"--column-type names {tname}.{cname}, which is not a migrated column")

    def restore_order(self) -> list[Table]:
        """Parents before children (FK order); cycles are broken deterministically —
        foreign keys are added after the data, so any order loads, this one reads well."""
        by_name = {t.name: t for t in self.tables}
        deps = {t.name: {fk.ref_table for fk in t.foreign_keys
                         if fk.ref_table in by_name and fk.ref_table != t.name} for t in self.tables}
        done: list[str] = []
        pending = sorted(by_name)
        while pending:
            ready = [n for n in pending if deps[n] <= set(done)]
            if not ready:  # a cycle: take the table with the fewest unmet parents
                ready = [min(pending, key=lambda n: (len(deps[n] - set(done)), n))]
            for n in ready:
                done.append(n)
                pending.remove(n)
        return [by_name[n] for n in done]
