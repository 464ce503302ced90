"""The backup's value encoding: JSON Lines, one array per row, lossless for every
SQLite storage class.

    NULL -> null        INTEGER -> number      REAL -> number with '.' or 'e'
    TEXT -> string      BLOB -> {"$b": base64}
    REAL +-Infinity / NaN -> {"$f": "inf" | "-inf" | "nan"}
    TEXT that is not UTF-8 -> {"$t": base64 of its bytes}   (preserved and marked)

orjson writes floats in shortest round-trip form and always with a '.' or an
exponent, so a REAL never reads back as an INTEGER, and reads back bit-exact.
"""
from __future__ import annotations

import base64
import math

import orjson

from .types import InvalidText

_NONFINITE = {math.inf: "inf", -math.inf: "-inf"}
_FLOATS = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _default(v):
    if isinstance(v, InvalidText):
        return {"$t": base64.b64encode(v).decode()}
    if isinstance(v, bytes):
        return {"$b": base64.b64encode(v).decode()}
    raise TypeError(f"cannot encode {type(v).__name__}")


def _mark_float(v):
    if type(v) is float and not math.isfinite(v):
        return {"$f": _NONFINITE.get(v, "nan")}
    return v


def encoder(nonfinite_columns: list[int]):
    """Row -> JSON bytes (no newline). Non-finite floats need a per-value look only
    in the columns whose census found them."""
    dumps, default = orjson.dumps, _default
    if not nonfinite_columns:
        return lambda row: dumps(row, default=default)

    def encode(row):
        row = list(row)
        for i in nonfinite_columns:
            row[i] = _mark_float(row[i])
        return dumps(row, default=default)
    return encode


def _decode_value(v):
    if type(v) is dict:
        if "$b" in v:
            return base64.b64decode(v["$b"])
        if "$t" in v:
            return InvalidText(base64.b64decode(v["$t"]))
        if "$f" in v:
            return _FLOATS[v["$f"]]
        raise ValueError(f"unknown marked value {v!r}")
    return v


def decoder(marked_columns: list[int]):
    """JSON bytes -> row list; only the columns that may hold marked values are looked at."""
    loads = orjson.loads
    if not marked_columns:
        return loads

    def decode(line):
        row = loads(line)
        for i in marked_columns:
            if type(row[i]) is dict:
                row[i] = _decode_value(row[i])
        return row
    return decode
