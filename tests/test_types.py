"""Type mapping, census decisions and conversions (no database needed)."""
import datetime as dt

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from migrate.errors import ConversionError
from migrate.phases.init_schema import translate_default
from migrate.schema import Column, pg_ident
from migrate.types import CONVERTERS, Census, converter, decide, declared_to_pg, pg_timestamp, to_datetime


@pytest.mark.parametrize("declared,pg", [
    ("INTEGER", "bigint"), ("int(5)", "bigint"), ("TINYINT UNSIGNED", "bigint"), ("BIGINT", "bigint"),
    ("REAL", "double precision"), ("double precision", "double precision"), ("FLOAT", "double precision"),
    ("TEXT", "text"), ("VARCHAR(10)", "text"), ("NVARCHAR(160)", "text"), ("CLOB", "text"),
    ("BLOB", "bytea"), ("NUMERIC", "numeric"), ("DECIMAL(10,2)", "numeric"), ("BOOLEAN", "boolean"),
    ("bool", "boolean"), ("DATE", "date"), ("DATETIME", "timestamp"), ("timestamp", "timestamp"),
    ("JSON", "jsonb"), ("ENUM", "numeric"), ("MONEY", "numeric"), ("", None),
])
def test_declared_type_mapping(declared, pg):
    assert declared_to_pg(declared) == pg


@pytest.mark.parametrize("declared,census,pg", [
    ("INTEGER", Census(integer=5), "bigint"),
    ("INTEGER", Census(integer=5, real=1), "numeric"),
    ("INTEGER", Census(integer=5, text=1), "text"),
    ("TEXT", Census(text=5, blob=1), "bytea"),
    ("", Census(), "text"),
    ("", Census(integer=3), "bigint"),
    ("", Census(real=3), "double precision"),
    ("", Census(integer=1, real=3), "numeric"),
    ("", Census(integer=1, text=3), "text"),
    ("VARCHAR(10)", Census(text=3), "text"),
    ("DATETIME", Census(text=3, integer=2), "timestamp"),
])
def test_census_decisions(declared, census, pg):
    assert decide(declared, census)[0] == pg


@pytest.mark.parametrize("value,expected", [
    ("2024-01-02 03:04:05", "2024-01-02 03:04:05"),
    ("2024-01-02T03:04:05", "2024-01-02 03:04:05"),
    ("2024-01-02T03:04:05Z", "2024-01-02 03:04:05"),
    ("2024-01-02T03:04:05.123456+02:00", "2024-01-02 01:04:05.123456"),
    ("2024-01-02 03:04:05.100-0130", "2024-01-02 04:34:05.1"),
    ("2024-01-02", "2024-01-02 00:00:00"),
    ("2024-01-02 03:04", "2024-01-02 03:04:00"),
    (1700000000, "2023-11-14 22:13:20"),
    (1700000000123, "2023-11-14 22:13:20.123"),
    (1700000000.5, "2023-11-14 22:13:20.5"),
    ("1700000000", "2023-11-14 22:13:20"),
    ("2024-01-02 03:04:05.123456000", "2024-01-02 03:04:05.123456"),
])
def test_timestamps(value, expected):
    assert CONVERTERS["timestamp"](value) == expected


@pytest.mark.parametrize("value,reason", [
    ("2023-02-29", "impossible date/time"), ("2024-13-01", "impossible"), ("yesterday", "not an ISO-8601"),
    (2023, "ambiguous"), ("2024-01-02 03:04:05.1234567", "microsecond"), (b"\x00", "not a date"),
    (float("inf"), "finite"),
])
def test_timestamp_errors(value, reason):
    with pytest.raises(ConversionError, match=reason):
        CONVERTERS["timestamp"](value)


def test_dates_keep_or_refuse_time():
    assert CONVERTERS["date"]("2024-02-29") == "2024-02-29"
    assert CONVERTERS["date"]("2024-02-29 00:00:00") == "2024-02-29"
    with pytest.raises(ConversionError, match="time of day"):
        CONVERTERS["date"]("2024-02-29 10:00:00")


@pytest.mark.parametrize("value,expected", [(1, "true"), (0, "false"), ("yes", "true"), ("F", "false"),
                                            (" on ", "true"), (1.0, "true")])
def test_booleans(value, expected):
    assert CONVERTERS["boolean"](value) == expected


@pytest.mark.parametrize("value", [2, "maybe", b"1", -1])
def test_boolean_errors(value):
    with pytest.raises(ConversionError):
        CONVERTERS["boolean"](value)


def test_numbers():
    assert CONVERTERS["bigint"](-2**63) == str(-2**63)
    assert CONVERTERS["numeric"]("123456789012345678901234567890.123") == "123456789012345678901234567890.123"
    assert CONVERTERS["numeric"](0.1) == "0.1"
    assert CONVERTERS["numeric"](float("inf")) == "Infinity"
    assert CONVERTERS["double precision"](2**53) == "9007199254740992.0"
    with pytest.raises(ConversionError, match="not exactly representable"):
        CONVERTERS["double precision"](2**53 + 1)
    with pytest.raises(ConversionError):
        CONVERTERS["numeric"]("1_000")
    with pytest.raises(ConversionError):
        CONVERTERS["bigint"]("١٢")  # Arabic-Indic digits are not digits here


def test_text_and_bytes():
    assert CONVERTERS["text"]("a\tb\\c\nd") == "a\\tb\\\\c\\nd"
    with pytest.raises(ConversionError, match="NUL"):
        CONVERTERS["text"]("a\x00b")
    assert CONVERTERS["bytea"](b"\x00\xff") == "\\\\x00ff"
    assert CONVERTERS["bytea"]("aGVsbG8=") == "\\\\x" + b"aGVsbG8=".hex()  # base64-looking text stays text bytes


@pytest.mark.parametrize("ch, escaped", [("\\", "\\\\"), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")])
def test_each_copy_special_character_alone_is_escaped(ch, escaped):
    census = Census(text=1)
    for conv in (CONVERTERS["text"], converter("text", census)):  # the checked and the fast path
        assert conv("a" + ch) == "a" + escaped
        assert conv(ch * 2) == escaped * 2


def test_json():
    assert CONVERTERS["jsonb"]('{"b": 1, "a": [true, null, 1.50]}') == '{"a": [true, null, 1.50], "b": 1}'
    with pytest.raises(ConversionError, match="invalid JSON"):
        CONVERTERS["jsonb"]("{not json")
    with pytest.raises(ConversionError, match="NaN is not valid JSON"):
        CONVERTERS["jsonb"]("[NaN]")


def _col(default, pg_type, declared="TEXT"):
    c = Column(name="c", declared=declared, notnull=False, default=default, pk=0)
    c.pg_type = pg_type
    return c


@pytest.mark.parametrize("default,pg_type,sql", [
    ("CURRENT_TIMESTAMP", "timestamp", "(CURRENT_TIMESTAMP AT TIME ZONE 'UTC')"),
    ("(datetime('now'))", "timestamp", "(CURRENT_TIMESTAMP AT TIME ZONE 'UTC')"),
    ("datetime('now','utc')", "timestamp", "(CURRENT_TIMESTAMP AT TIME ZONE 'UTC')"),
    ("CURRENT_DATE", "date", "((CURRENT_TIMESTAMP AT TIME ZONE 'UTC'))::date"),
    ("(strftime('%s','now'))", "bigint", "(extract(epoch FROM CURRENT_TIMESTAMP))::bigint"),
    ("'it''s'", "text", "'it''s'::text"),
    ("0", "boolean", "'false'::boolean"),
    ("-1.5", "double precision", "'-1.5'::double precision"),
    ("x'00ff'", "bytea", "'\\x00ff'::bytea"),
    ("NULL", "text", None),
])
def test_default_translation(default, pg_type, sql):
    assert translate_default(_col(default, pg_type)) == (sql, None)


def test_untranslatable_default_is_dropped_with_warning_never_copied_as_text():
    sql, warning = translate_default(_col("(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))", "text"))
    assert sql is None and "no translation" in warning
    sql, warning = translate_default(_col("abs(-1)", "bigint"))
    assert sql is None and "dropped" in warning


def test_long_names_shorten_deterministically_without_collisions():
    a, b = "x" * 70 + "_one", "x" * 70 + "_two"
    assert len(pg_ident(a).encode()) <= 63 and pg_ident(a) != pg_ident(b) and pg_ident(a) == pg_ident(a)
    assert pg_ident("user") == "user"
    assert len(pg_ident("é" * 40).encode()) <= 63


_stamp_chars = st.sampled_from("0123456789-: TZzt+W.")


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.integers(min_value=-2**62, max_value=2**62),
    st.integers(min_value=-20000, max_value=20000),
    st.datetimes(min_value=dt.datetime(1, 1, 1)).map(lambda d: d.isoformat(sep=" ", timespec="seconds")),
    st.datetimes(min_value=dt.datetime(1, 1, 1)).map(lambda d: d.isoformat(timespec="seconds") + "Z"),
    st.builds(lambda d, sep, end: d.isoformat(sep=sep, timespec="seconds") + end,
              st.datetimes(min_value=dt.datetime(1, 1, 1)), st.sampled_from(" Tt_"), st.sampled_from(["", "Z", "z", "t", " "])),
    st.text(_stamp_chars, min_size=19, max_size=20),
    st.builds(lambda s, i, c: s[:i] + c + s[i + 1:],
              st.datetimes().map(lambda d: d.isoformat(sep=" ", timespec="seconds")),
              st.integers(0, 18), _stamp_chars)))
def test_timestamp_fast_paths_agree_with_the_full_parser(v):
    """The C-validated shortcuts of the timestamp converter return what the full parser
    returns, and refuse what it refuses."""
    try:
        expected = pg_timestamp(to_datetime(v))
    except ConversionError:
        with pytest.raises(ConversionError):
            CONVERTERS["timestamp"](v)
        return
    assert CONVERTERS["timestamp"](v) == expected


# per kind of column: values of its own kind (the census fast paths apply), and others,
# some of which do not convert
_CLEAN = {
    "bigint": st.integers(-2**63, 2**63 - 1),
    "text": st.text(max_size=6).filter(lambda v: "\x00" not in v),
    "double precision": st.floats(),
    "boolean": st.sampled_from([0, 1]),
    "jsonb": st.sampled_from(['{"b": 1, "a": [2]}', '{"a":1}', "[1, 2.50]"]),
    "timestamp": st.sampled_from(["2024-01-02 03:04:05", "2024-01-02T03:04:05Z"]),
}
_ODD = {
    "bigint": st.sampled_from(["12", "x", 1.5]),
    "text": st.sampled_from(["a\tb", "\\", "\x00", 7, 2.5]),
    "double precision": st.sampled_from([2**60 + 1, 3, "1.5", "y"]),
    "boolean": st.sampled_from(["t", "no", 2, "maybe"]),
    "jsonb": st.sampled_from(["{bad", "nul\x00", 4]),
    "timestamp": st.sampled_from([1700000000, "2024-02-30 00:00:00", 5]),
}


@st.composite
def _batches(draw):
    odd = [draw(st.booleans()) for _ in _CLEAN]
    kinds = [st.one_of(st.none(), _CLEAN[k], *([_ODD[k]] if o else [])) for k, o in zip(_CLEAN, odd)]
    return draw(st.lists(st.tuples(*kinds), max_size=12))


@settings(max_examples=200, deadline=None)
@given(_batches(), st.booleans())
@example([(None, "a", 1.5, 1, '{"a":1}', "2024-01-02 03:04:05"), (5, "b", None, 0, "[1]", "2024-01-02 03:04:05")],
         True)  # NULLs only where the fast converter would not refuse them (str, repr)
def test_batches_convert_a_column_at_a_time_as_row_by_row(rows, fast):
    """The column-at-a-time conversion gives the very lines, hash and errors of the row-by-row
    one, with the census fast paths (fast) or the checked converters."""
    from migrate.convert import RowConverter
    from migrate.schema import Table
    from migrate.types import line_hash_sum
    cols = [Column(name=f"c{i}", declared="", notnull=False, default=None, pk=0) for i in range(len(_CLEAN))]
    for i, (c, pg) in enumerate(zip(cols, _CLEAN)):
        c.pg_type = pg
        values = [r[i] for r in rows]
        # the census the values have (fast paths where they allow), or one that allows none
        c.census = Census(integer=sum(type(v) is int for v in values), real=sum(type(v) is float for v in values),
                          text=sum(type(v) is str for v in values)) if fast else Census(integer=1, real=1, text=1)
    conv = RowConverter(Table(name="t", columns=cols))
    errors: list = []
    lines, h = conv.converted(rows, 10, errors)
    expected_errors: list = []
    expected = conv._rows(rows, 10, expected_errors)
    assert lines == expected and conv.lines(rows, 10, []) == expected
    assert h == line_hash_sum([conv._double_bits(x) for x in expected]) == sum(map(conv.hash, expected))
    assert [(e.to_dict(), n) for e, n in errors] == [(e.to_dict(), n) for e, n in expected_errors]
