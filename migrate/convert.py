"""A table's rows -> COPY text lines (the converted, canonical form), with errors that
name table, row key, column, value and reason."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ConversionError
from .schema import Table
from .types import NULL, converter, copy_escape, describe, float_field_bits, line_hash, line_hash_sum


@dataclass
class RowError:
    table: str
    key: dict
    column: str
    value: str
    reason: str

    def __str__(self) -> str:
        key = ", ".join(f"{k}={v!r}" for k, v in self.key.items())
        return (f"table {self.table!r}, row {key}, column {self.column!r}: "
                f"value {self.value} cannot become {self._type}: {self.reason}")

    _type = ""

    def to_dict(self) -> dict:
        return {"table": self.table, "key": self.key, "column": self.column,
                "value": self.value, "reason": self.reason}


class RowConverter:
    """fills: {column name: value} put in place of NULL (--fill-null), counted in .filled.

    trusted: every row is known to convert (the backup converted them all with these
    very target types and found no error), so JSON text goes to COPY as written and
    PostgreSQL's own parser builds the jsonb; verify still compares the result with
    the canonical form the backup computed."""

    def __init__(self, table: Table, fills: dict | None = None, trusted: bool = False):
        self.table = table
        self.convs = [converter(c.pg_type, c.census) for c in table.columns]
        if trusted:
            self.convs = [_json_as_written(f) if c.pg_type in ("jsonb", "json") else f
                          for f, c in zip(self.convs, table.columns)]
        self.fills = [(i, fills[c.name]) for i, c in enumerate(table.columns) if c.name in (fills or {})]
        self.filled = 0
        for i, c in enumerate(table.columns):
            if c.max_length:
                self.convs[i] = _bounded(self.convs[i], c.max_length)
        self.notnull = [i for i, c in enumerate(table.columns) if c.app_notnull]
        self.checked = bool(self.fills or self.notnull)
        if self.checked:
            self.line = self._line_checked
        self.pk_idx = [table.columns.index(c) for c in table.pk]
        self.double_idx = [i for i, c in enumerate(table.columns) if c.pg_type == "double precision"]

    def hash(self, line: str) -> int:
        """The row hash of a COPY line, as types.row_hash_sql computes it in PostgreSQL."""
        return line_hash(self._double_bits(line) if self.double_idx else line)

    def hash_lines(self, lines: list[str]) -> int:
        """sum(map(self.hash, lines)), hashed a batch at a time."""
        if self.double_idx:
            lines = list(map(self._double_bits, lines))
        return line_hash_sum(lines)

    def _double_bits(self, line: str) -> str:
        fields = line.split("\t")
        for i in self.double_idx:
            if fields[i] != NULL:
                fields[i] = float_field_bits(fields[i])
        return "\t".join(fields)

    def line(self, row) -> str:
        """The COPY line (without newline). Raises ConversionError; see explain()."""
        return "\t".join([NULL if v is None else f(v) for f, v in zip(self.convs, row)])

    def _line_checked(self, row) -> str:
        """With --fill-null rules or NOT NULL columns of the application's schema."""
        if self.fills:
            row = list(row)
            for i, value in self.fills:
                if row[i] is None:
                    row[i] = value
                    self.filled += 1
        for i in self.notnull:
            if row[i] is None:
                raise ConversionError("NULL in a column that is NOT NULL in the application's schema "
                                      "(--fill-null TABLE.COLUMN=VALUE supplies one)")
        return RowConverter.line(self, row)

    def explain(self, row, ordinal: int) -> RowError:
        """Which column of a failing row failed, and why."""
        if self.fills:
            row = list(row)
            for i, value in self.fills:
                if row[i] is None:
                    row[i] = value
        for i, (c, f, v) in enumerate(zip(self.table.columns, self.convs, row)):
            try:
                if v is None:
                    if i in self.notnull:
                        raise ConversionError("NULL in a column that is NOT NULL in the application's schema "
                                              "(--fill-null TABLE.COLUMN=VALUE supplies one)")
                    continue
                f(v)
            except ConversionError as e:
                err = RowError(self.table.name, self.key(row, ordinal), c.name, describe(v), str(e))
                err._type = c.pg_type
                return err
        raise AssertionError("explain() called on a row that converts")

    def key(self, row, ordinal: int) -> dict:
        if self.pk_idx:
            return {self.table.columns[i].name: _plain(row[i]) for i in self.pk_idx}
        return {"row_number": ordinal}

    def lines(self, batch, start: int, errors: list) -> list[str]:
        """Convert a batch; failing rows are appended to errors as (RowError, index in batch)."""
        cols = self._columns(batch)
        return self._rows(batch, start, errors) if cols is None else list(map("\t".join, zip(*cols)))

    def converted(self, batch, start: int, errors: list) -> tuple[list[str], int]:
        """lines() of a batch and their hash_lines(), from the same converted columns."""
        cols = self._columns(batch)
        if cols is None:
            lines = self._rows(batch, start, errors)
            return lines, self.hash_lines(lines)
        lines = list(map("\t".join, zip(*cols)))
        if not self.double_idx:
            return lines, line_hash_sum(lines)
        for i in self.double_idx:
            cols[i] = [NULL if f == NULL else float_field_bits(f) for f in cols[i]]
        return lines, line_hash_sum(list(map("\t".join, zip(*cols))))

    def _columns(self, batch) -> list[list[str]] | None:
        """The batch converted a column at a time (a C-level loop per column where nothing is
        NULL), or None: a value does not convert, or the rows need the checked path; the
        caller then converts row by row, which names the failing rows."""
        if self.checked or not batch:
            return None
        out = []
        try:
            for i, f in enumerate(self.convs):
                col = [row[i] for row in batch]  # not zip(*batch): measured, it left each worker ~10 MB bigger
                out.append([NULL if v is None else f(v) for v in col] if None in col else list(map(f, col)))
        except ConversionError:
            return None
        return out

    def _rows(self, batch, start: int, errors: list) -> list[str]:
        out = []
        line = self.line
        for n, row in enumerate(batch):
            try:
                out.append(line(row))
            except ConversionError:
                errors.append((self.explain(row, start + n + 1), n))
        return out


def _json_as_written(conv):
    def passthrough(v) -> str:
        return copy_escape(v) if type(v) is str else conv(v)
    return passthrough


def _bounded(conv, n: int):
    def check(v) -> str:
        out = conv(v)
        if isinstance(v, str) and len(v) > n:
            raise ConversionError(f"{len(v)} characters do not fit varchar({n})")
        return out
    return check


def _plain(v):
    return v if isinstance(v, (int, float, str)) or v is None else describe(v)

