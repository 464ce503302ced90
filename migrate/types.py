"""SQLite -> PostgreSQL: the type mapping (as data), the census decision, value conversion.

Every converted value is rendered as a field of PostgreSQL's COPY text format, and
rendered *canonically*: exactly the text PostgreSQL prints back for that value
(``value::text`` with DateStyle ISO and TimeZone UTC). That is what makes the
content checksum work: the hash of the line we send equals the hash of the row
PostgreSQL stores, rendered by ``verify``'s SQL (see ``row_hash_sql``).
"""
from __future__ import annotations

import datetime as dt
import json
import math
import re
import struct
from dataclasses import dataclass
from functools import lru_cache
from decimal import Decimal, InvalidOperation
from typing import Callable

try:  # CPython's own md5: for rows of ~100 bytes 0.22 us against OpenSSL's 0.32 (its per-object setup)
    from _md5 import md5
except ImportError:  # a Python built without it
    from hashlib import md5

from .errors import ConversionError

NULL = "\\N"

# ----------------------------------------------------------------------------
# The mapping table. Order matters: the first row whose test matches wins.
# ``exact`` matches the declared type's base name (parameters stripped,
# upper-cased, spaces collapsed); ``contains`` applies SQLite's affinity rules
# (https://sqlite.org/datatype3.html#determination_of_column_affinity).
# ----------------------------------------------------------------------------
TYPE_MAP: list[tuple[str, tuple[str, ...], str]] = [
    ("exact", ("BOOLEAN", "BOOL"), "boolean"),
    ("exact", ("DATE",), "date"),
    ("exact", ("DATETIME", "TIMESTAMP", "TIMESTAMP WITHOUT TIME ZONE"), "timestamp"),
    ("exact", ("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"), "timestamptz"),
    ("exact", ("JSON", "JSONB"), "jsonb"),
    ("exact", ("NUMERIC", "DECIMAL"), "numeric"),
    # SQLite affinity rules, in SQLite's own order
    ("contains", ("INT",), "bigint"),
    ("contains", ("CHAR", "CLOB", "TEXT"), "text"),
    ("contains", ("BLOB",), "bytea"),
    ("contains", ("REAL", "FLOA", "DOUB"), "double precision"),
]
NUMERIC_AFFINITY_DEFAULT = "numeric"  # any other declared name: SQLite's NUMERIC affinity
UNTYPED = None  # no declared type: decided by the census alone

NUMBER_TYPES = {"bigint", "double precision", "numeric"}
PG_TYPES = {"bigint", "double precision", "numeric", "text", "bytea", "boolean", "date",
            "timestamp", "timestamptz", "jsonb"}


def base_type_name(declared: str) -> str:
    name = re.sub(r"\(.*?\)", " ", declared or "")
    return " ".join(name.upper().split())


def declared_to_pg(declared: str) -> str | None:
    """The target type the declared type name alone asks for (None: untyped)."""
    base = base_type_name(declared)
    if not base:
        return UNTYPED
    for kind, names, pg in TYPE_MAP:
        if kind == "exact" and base in names:
            return pg
        if kind == "contains" and any(n in base for n in names):
            return pg
    return NUMERIC_AFFINITY_DEFAULT


@dataclass
class Census:
    """How many values of each storage class a column holds (``typeof()``)."""

    null: int = 0
    integer: int = 0
    real: int = 0
    text: int = 0
    blob: int = 0
    nonfinite: int = 0  # REAL +-Infinity (SQLite stores NaN as NULL)
    text_nul: int = 0  # TEXT values containing U+0000
    invalid_utf8: int = 0  # TEXT values that are not UTF-8 (counted by the backup pass)

    def classes(self) -> set[str]:
        return {k for k in ("integer", "real", "text", "blob") if getattr(self, k)}

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def decide(declared: str, census: Census) -> tuple[str, str | None]:
    """Target type for a column from its declared type and census. Returns (type, reason).

    The reason is None when the declared type was kept, else why the census changed it.
    """
    want = declared_to_pg(declared)
    cls = census.classes()
    if want is UNTYPED:
        if not cls:
            return "text", "untyped column holding only NULLs: text"
        if cls == {"integer"}:
            return "bigint", "untyped column holding only integers"
        if cls == {"real"}:
            return "double precision", "untyped column holding only reals"
        if cls == {"integer", "real"}:
            return "numeric", "untyped column mixing integers and reals: numeric holds both exactly"
        if "blob" in cls:
            return "bytea", _blob_reason(census) if cls != {"blob"} else "untyped column holding BLOBs"
        return "text", "untyped column holding text" + (" and numbers (numbers kept as their text)" if cls - {"text"} else "")
    if "blob" in cls and want != "bytea":
        return "bytea", _blob_reason(census)
    if want in NUMBER_TYPES and "text" in cls:
        return "text", (f"declared {declared!r} but holds {census.text} TEXT value(s): migrated as text, "
                        "numbers keep their exact decimal text")
    if want == "bigint" and "real" in cls:
        return "numeric", (f"declared {declared!r} but holds {census.real} REAL value(s): "
                           "numeric holds integers and reals exactly")
    if want == "double precision" and "integer" in cls:
        return "numeric", (f"declared {declared!r} but holds {census.integer} INTEGER value(s): "
                           "numeric holds integers and reals exactly")
    return want, None


def _blob_reason(c: Census) -> str:
    return (f"holds {c.blob} BLOB value(s) beside other storage classes: bytea "
            "(text stored as its UTF-8 bytes, numbers as their decimal text)")


# ----------------------------------------------------------------------------
# Values. A backup value is what sqlite3 returns: None, int, float, str, bytes,
# or InvalidText (TEXT whose bytes are not UTF-8).
# ----------------------------------------------------------------------------
class InvalidText(bytes):
    """A TEXT value whose bytes are not valid UTF-8 (kept byte-exact, marked)."""


_COPY_ESCAPE = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def copy_escape(s: str) -> str:
    # most text holds none of the four: four scans in C beat one translate() (0.05 vs 0.2-0.6 us)
    if "\\" in s or "\n" in s or "\r" in s or "\t" in s:
        return s.translate(_COPY_ESCAPE)
    return s


def describe(v) -> str:
    """A value as an operator should see it in an error message (bounded length)."""
    if v is None:
        return "NULL"
    if isinstance(v, InvalidText):
        r = f"TEXT with invalid UTF-8 x'{bytes(v[:32]).hex()}'"
    elif isinstance(v, bytes):
        r = f"BLOB x'{v[:32].hex()}'" + ("..." if len(v) > 32 else "")
    else:
        r = repr(v)
    return r if len(r) <= 120 else r[:117] + "..."


# -- floats: sent as Python's repr, which reads back as the same double (bit-exact).
# PostgreSQL's own text output is Ryu's "shortest", which is not always the same
# text as Python's shortest, so the checksum compares a double by its 8 bytes
# (float8send in SQL, struct.pack here): see field_sql and RowConverter.hash.
def pg_float(v: float) -> str:
    if v != v:
        return "NaN"
    if v in (math.inf, -math.inf):
        return "Infinity" if v > 0 else "-Infinity"
    return repr(v)


def float_field_bits(field: str) -> str:
    """A double's COPY field -> the hex of its IEEE bytes, as encode(float8send(x), 'hex')."""
    return struct.pack(">d", float(field)).hex()


# -- numeric: numeric_out (plain notation, scale kept, no negative zero)
_NUMERIC_TEXT = re.compile(r"^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$", re.ASCII)


def pg_numeric(d: Decimal) -> str:
    if d.is_nan():
        return "NaN"
    if d.is_infinite():
        return "Infinity" if d > 0 else "-Infinity"
    s = format(d, "f")
    if s.startswith("-") and d == 0:
        s = s[1:]
    return s


def _decimal_of_text(s: str) -> Decimal:
    if not _NUMERIC_TEXT.match(s):
        stripped = s.strip().lower()
        if stripped in ("nan", "infinity", "+infinity", "-infinity", "inf", "+inf", "-inf"):
            return Decimal(stripped.replace("infinity", "inf"))
        raise ConversionError("not a number")
    return Decimal(s.strip())


# -- timestamps and dates
_ISO = re.compile(
    r"^\s*([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]+))?)?)?"
    r"\s*(Z|z|[+-][0-9]{2}(?::?[0-9]{2})?)?\s*$", re.ASCII
)
EPOCH = dt.datetime(1970, 1, 1)
EPOCH_MS_THRESHOLD = 100_000_000_000  # |n| >= 1e11: milliseconds (1e11 s would be year 5138)
AMBIGUOUS_YEARS = range(1, 10000)  # an integer 1..9999 in a date column: a year? seconds? refuse


def parse_iso(s: str) -> dt.datetime:
    m = _ISO.match(s)
    if not m:
        raise ConversionError("not an ISO-8601 date/time (YYYY-MM-DD[ T]HH:MM[:SS[.ffffff]][Z|+HH:MM])")
    y, mo, d, h, mi, sec, frac, tz = m.groups()
    us = 0
    if frac:
        if len(frac) > 6 and frac[6:].strip("0"):
            raise ConversionError("more than microsecond precision would be lost")
        us = int((frac + "000000")[:6])
    try:
        value = dt.datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(sec or 0), us)
    except ValueError as e:
        raise ConversionError(f"impossible date/time ({e})") from None
    if tz and tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        offset = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        value = value - sign * offset  # normalised to UTC
    return value


def _epoch(v) -> dt.datetime:
    if isinstance(v, int) and v in AMBIGUOUS_YEARS:
        raise ConversionError("a small integer in a date/time column is ambiguous (a year? epoch seconds?)")
    if isinstance(v, float) and not math.isfinite(v):
        raise ConversionError("not a finite number")
    try:
        if abs(v) >= EPOCH_MS_THRESHOLD:
            if isinstance(v, float) and not v.is_integer():
                raise ConversionError("fractional epoch milliseconds")
            return EPOCH + dt.timedelta(milliseconds=int(v))
        if isinstance(v, int):
            return EPOCH + dt.timedelta(seconds=v)
        return EPOCH + dt.timedelta(microseconds=round(v * 1_000_000))
    except OverflowError:
        raise ConversionError("epoch value out of range") from None


def to_datetime(v) -> dt.datetime:
    if isinstance(v, (int, float)):
        return _epoch(v)
    if isinstance(v, str):
        try:
            return parse_iso(v)
        except ConversionError:
            t = v.strip()
            if re.fullmatch(r"[+-]?[0-9]+", t, re.ASCII):
                return _epoch(int(t))
            raise
    raise ConversionError("not a date/time")


def pg_timestamp(value: dt.datetime) -> str:
    """timestamp_out: 'YYYY-MM-DD HH:MM:SS[.ffffff without trailing zeros]' (year padded
    to four digits, as isoformat does; value is naive)."""
    if value.microsecond:
        return value.isoformat(" ").rstrip("0")  # the fraction is not zero: stops before '.'
    return value.isoformat(" ")


def _to_timestamp(v) -> str:
    # fast path, validated in C: PostgreSQL's own rendering ('YYYY-MM-DD HH:MM:SS'), the same
    # with 'T' and/or a 'Z' suffix (UTC)
    if type(v) is str:
        n = len(v)
        if (n == 19 or n == 20 and v[19] in "Zz") and v[10] in " T" and v[4] == v[7] == "-" \
                and v[13] == v[16] == ":" and v[:4] >= "1000" and v.isascii():
            try:
                dt.datetime.fromisoformat(v[:19])
                return v if n == 19 and v[10] == " " else v[:10] + " " + v[11:19]
            except ValueError:
                pass  # the slow path names the reason
    return pg_timestamp(to_datetime(v))


def _to_timestamptz(v) -> str:
    return pg_timestamp(to_datetime(v)) + "+00"


def _to_date(v) -> str:
    value = to_datetime(v)
    if value.time() != dt.time(0):
        raise ConversionError("has a time of day; a date column would lose it")
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"


# -- booleans
_TRUE = {"1", "t", "true", "y", "yes", "on"}
_FALSE = {"0", "f", "false", "n", "no", "off"}


def _to_boolean(v) -> str:
    if isinstance(v, (int, float)) and v in (0, 1):
        return "true" if v else "false"
    if isinstance(v, str):
        t = v.strip().lower()
        if t in _TRUE:
            return "true"
        if t in _FALSE:
            return "false"
    raise ConversionError("not a boolean (0/1, true/false, t/f, yes/no, y/n, on/off)")


# -- JSON: rendered exactly as jsonb_out prints it
def _json_constant(name):
    raise ConversionError(f"{name} is not valid JSON")


_JSON_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')


def _json_string(s: str) -> str:
    if not _JSON_NEEDS_ESCAPE.search(s):  # the common case: nothing to escape
        return '"' + s + '"'
    if "\x00" in s:
        raise ConversionError("JSON string contains \\u0000, which jsonb cannot store")
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif o < 0x20:
            out.append({8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t"}.get(o, f"\\u{o:04x}"))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def jsonb_key_order(key: str) -> tuple[int, bytes]:
    k = key.encode()
    return len(k), k  # jsonb orders keys by length in bytes, then bytewise


def jsonb_text(node) -> str:
    t = type(node)
    if t is str:
        return _json_string(node)
    if t is dict:
        return "{" + ", ".join([_json_string(k) + ": " + jsonb_text(v)
                                for k, v in sorted(node.items(), key=lambda kv: jsonb_key_order(kv[0]))]) + "}"
    if t is list:
        return "[" + ", ".join([jsonb_text(x) for x in node]) + "]"
    if t is int:
        return str(node)
    if t is Decimal:
        return pg_numeric(node)
    if node is None:
        return "null"
    if t is bool:
        return "true" if node else "false"
    raise ConversionError(f"unexpected JSON node {t.__name__}")


_JSON_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_json_constant)

# The common case, rendered without building a tree: a flat object whose keys and string
# values need no escape and whose numbers have no exponent. Such a number prints in jsonb as
# written (numeric keeps its scale), but for a negative zero; such a string prints as written.
_WS = "[ \t\n\r]*"
_STR = '"[^"\\\\\x00-\x1f]*"'
_SCALAR = f"(?:{_STR}|-?(?:0|[1-9][0-9]*)(?:\\.[0-9]+)?|true|false|null)"
_MEMBER = f"{_WS}{_STR}{_WS}:{_WS}{_SCALAR}{_WS}"
_FLAT_OBJECT = re.compile(f"{_WS}\\{{(?:{_MEMBER}(?:,{_MEMBER})*|{_WS})\\}}{_WS}")
_FLAT_MEMBER = re.compile(f'"([^"\\\\\x00-\x1f]*)"{_WS}:{_WS}({_SCALAR})')


def _flat_jsonb(v: str) -> str | None:
    """jsonb_out of a flat object without escapes or exponents; None for anything else.

    The common spellings (compact, as SQLite's json_object and JavaScript write it, or
    with ', ' and ': ', as Python's json.dumps does) are recognised by rebuilding them from
    the members found and comparing: equal text proves the shape, with no second regex.
    A shape (its keys in order) is kept with its three templates; apps repeat shapes."""
    pairs = _FLAT_MEMBER.findall(v)
    if pairs:
        keys, values = zip(*pairs)
        shape = _SHAPES.get(keys)
        if shape is None:
            shape = _shape(keys)
        if shape and (shape[0](*values) == v or shape[1](*values) == v):
            if "-0" in v:
                values = _no_negative_zero(values)
            return shape[2](*values)
    return _flat_jsonb_any(v)


_SHAPES: dict = {}


def _shape(keys: tuple):
    """(compact, spaced, jsonb_out) format functions for objects with these keys in this
    order; False when a key repeats (the general path keeps the last, as jsonb does)."""
    if len(_SHAPES) >= 10_000:
        _SHAPES.clear()
    if len(set(keys)) != len(keys):
        _SHAPES[keys] = False
        return False
    esc = [k.replace("{", "{{").replace("}", "}}") for k in keys]
    order = sorted(range(len(keys)), key=lambda i: jsonb_key_order(keys[i]))
    shape = ("{{" + ",".join(f'"{k}":{{{i}}}' for i, k in enumerate(esc)) + "}}").format, \
            ("{{" + ", ".join(f'"{k}": {{{i}}}' for i, k in enumerate(esc)) + "}}").format, \
            ("{{" + ", ".join(f'"{esc[i]}": {{{i}}}' for i in order) + "}}").format
    _SHAPES[keys] = shape
    return shape


def _no_negative_zero(values) -> list:
    return [x[1:] if x.startswith("-0") and not x.strip("-0.") else x for x in values]  # numeric has none


def _flat_jsonb_any(v: str) -> str | None:
    """_flat_jsonb for any whitespace and duplicate keys."""
    if not _FLAT_OBJECT.fullmatch(v):
        return None
    members = dict(_FLAT_MEMBER.findall(v))  # the last of duplicate keys wins, as in jsonb
    keys = sorted(members, key=jsonb_key_order)
    if "-0" in v:
        members = dict(zip(members, _no_negative_zero(members.values())))
    return "{" + ", ".join([f'"{k}": {members[k]}' for k in keys]) + "}"


def _to_jsonb(v) -> str:
    if type(v) is str and v[:1] == "{" and (flat := _flat_jsonb(v)) is not None:
        return flat  # nothing in it needs COPY escaping
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ConversionError("not a finite number: JSON cannot hold it")
        return pg_numeric(Decimal(repr(v)))
    if not isinstance(v, str):
        raise ConversionError("not JSON text")
    try:
        node = _JSON_DECODER.decode(v)  # a plain dict keeps the last of duplicate keys, as jsonb does
    except ValueError as e:
        if isinstance(e, ConversionError):
            raise
        raise ConversionError(f"invalid JSON ({e})") from None
    return copy_escape(jsonb_text(node))


# -- numbers and text
def _to_bigint(v) -> str:
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float) and v.is_integer() and -2**63 <= v < 2**63:
        return str(int(v))
    if isinstance(v, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", v, re.ASCII):
        n = int(v)
        if -2**63 <= n < 2**63:
            return str(n)
        raise ConversionError("out of bigint range")
    raise ConversionError("not an integer")


def _to_double(v) -> str:
    if isinstance(v, float):
        return pg_float(v)
    if isinstance(v, int):
        f = float(v)
        if f == v:
            return pg_float(f)
        raise ConversionError("integer not exactly representable as double precision")
    if isinstance(v, str):
        try:
            f = float(_decimal_of_text(v))
        except (ConversionError, InvalidOperation):
            raise ConversionError("not a number") from None
        if Decimal(repr(f)) != _decimal_of_text(v) and math.isfinite(f):
            raise ConversionError("text number not exactly representable as double precision")
        return pg_float(f)
    raise ConversionError("not a number")


def _to_numeric(v) -> str:
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return pg_float(v) if not math.isfinite(v) else pg_numeric(Decimal(repr(v)))
    if isinstance(v, str):
        try:
            return pg_numeric(_decimal_of_text(v))
        except InvalidOperation:
            raise ConversionError("not a number") from None
    raise ConversionError("not a number")


def _to_text(v) -> str:
    if type(v) is str:
        if "\x00" in v:
            raise ConversionError("TEXT contains NUL (U+0000), which PostgreSQL text cannot store; "
                                  "use --column-type TABLE.COLUMN=bytea to keep it as bytes")
        return copy_escape(v)
    if isinstance(v, InvalidText):
        raise ConversionError("TEXT is not valid UTF-8, which PostgreSQL text cannot store; "
                              "use --column-type TABLE.COLUMN=bytea to keep it as bytes")
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)  # the shortest text that reads back as the same double
    raise ConversionError("a BLOB cannot become text")


def _to_bytea(v) -> str:
    if isinstance(v, bytes):  # BLOB, or TEXT that is not UTF-8
        return "\\\\x" + v.hex()
    if isinstance(v, str):
        return "\\\\x" + v.encode("utf-8").hex()
    if isinstance(v, (int, float)):
        return "\\\\x" + (str(v) if isinstance(v, int) else repr(v)).encode().hex()
    raise ConversionError("cannot become bytea")


def _int_range(bits: int):
    lo, hi = -2 ** (bits - 1), 2 ** (bits - 1)

    def conv(v) -> str:
        out = _to_bigint(v)
        if not lo <= int(out) < hi:
            raise ConversionError(f"out of range for a {bits}-bit integer column")
        return out
    return conv


def _to_json(v) -> str:
    """json (not jsonb) keeps the text as written: validate it, send it unchanged."""
    if isinstance(v, str):
        _to_jsonb(v)
        return copy_escape(v)
    return _to_jsonb(v)


def _to_uuid(v) -> str:
    import uuid
    try:
        if isinstance(v, bytes) and len(v) == 16:
            return str(uuid.UUID(bytes=bytes(v)))
        if isinstance(v, str):
            return str(uuid.UUID(v.strip()))
    except ValueError:
        pass
    raise ConversionError("not a UUID")


CONVERTERS: dict[str, Callable[[object], str]] = {
    "integer": _int_range(32),
    "smallint": _int_range(16),
    "json": _to_json,
    "uuid": _to_uuid,
    "bigint": _to_bigint,
    "double precision": _to_double,
    "numeric": _to_numeric,
    "text": _to_text,
    "bytea": _to_bytea,
    "boolean": _to_boolean,
    "date": _to_date,
    "timestamp": _to_timestamp,
    "timestamptz": _to_timestamptz,
    "jsonb": _to_jsonb,
}


def converter(pg_type: str, census: Census | None = None) -> Callable[[object], str]:
    """The COPY-field converter for one column; a fast path when the census allows it."""
    if census is not None:
        cls = census.classes()
        if pg_type == "bigint" and cls <= {"integer"}:
            return str
        if pg_type == "text" and cls <= {"text"} and not census.text_nul and not census.invalid_utf8:
            return _fast_text
        if pg_type == "double precision" and cls <= {"real"}:
            return pg_float
    return CONVERTERS[pg_type]


def _fast_text(v) -> str:
    if type(v) is str:
        return copy_escape(v)
    return _to_text(v)  # InvalidText: the precise error


# ----------------------------------------------------------------------------
# The same rendering, in SQL: PostgreSQL prints each stored value the way the
# converters above print it, so md5(line) matches on both sides.
# ----------------------------------------------------------------------------
_SQL_ESCAPE = ("replace(replace(replace(replace({x}, E'\\\\', E'\\\\\\\\'), E'\\n', E'\\\\n'), "
               "E'\\r', E'\\\\r'), E'\\t', E'\\\\t')")


def field_sql(col_sql: str, pg_type: str) -> str:
    """SQL rendering one column of a row as its COPY text field (NULL -> \\N)."""
    if pg_type in ("text", "jsonb", "json"):
        expr = _SQL_ESCAPE.format(x=f"{col_sql}::text")
    elif pg_type == "bytea":
        expr = f"(E'\\\\\\\\x' || encode({col_sql}, 'hex'))"
    elif pg_type == "double precision":
        expr = f"encode(float8send({col_sql}), 'hex')"
    else:
        expr = f"{col_sql}::text"
    return f"coalesce({expr}, E'\\\\N')"


def row_hash_sql(cols: list[tuple[str, str]]) -> str:
    """SQL for the signed 64-bit hash of one row; cols are (quoted column, pg type)."""
    line = " || E'\\t' || ".join(field_sql(c, t) for c, t in cols) if cols else "''"
    return f"('x' || left(md5({line}), 16))::bit(64)::bigint"


def bytes_hash(data: bytes) -> int:
    """The signed 64-bit prefix of md5(data): a row's share of a table checksum."""
    return int.from_bytes(md5(data).digest()[:8], "big", signed=True)


_digest = type(md5()).digest


@lru_cache(maxsize=8)
def _prefixes(n: int) -> Callable[[bytes], tuple]:
    return struct.Struct(">" + "q8x" * n).unpack  # n digests -> their signed 64-bit prefixes


def bytes_hash_sum(items: list[bytes]) -> int:
    """sum(map(bytes_hash, items)), with one Python call per batch instead of three per row."""
    return sum(_prefixes(len(items))(b"".join(map(_digest, map(md5, items))))) if items else 0


def line_hash(line: str) -> int:
    """Python side of row_hash_sql: bytes_hash of the line's UTF-8."""
    return bytes_hash(line.encode("utf-8"))


def line_hash_sum(lines: list[str]) -> int:
    """sum(map(line_hash, lines))."""
    return bytes_hash_sum(list(map(str.encode, lines)))


def fold(total: int) -> str:
    """A table checksum: the sum of row hashes modulo 2**64, as 16 hex digits."""
    return f"{total % 2**64:016x}"

