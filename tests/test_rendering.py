"""The checksum rests on one property: for every value, the COPY field migrate sends is
exactly what PostgreSQL prints back. Checked against a real server, with generated values."""
import datetime as dt
import json
import struct
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migrate.postgres_target import SESSION_SETTINGS
from migrate.types import (_decimal_of_text, _to_jsonb, bytes_hash_sum, float_field_bits, jsonb_text, line_hash_sum,
                           pg_float, pg_numeric, pg_timestamp)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def cur(server):
    conn = server.connect()
    conn.autocommit = True
    c = conn.cursor()
    c.execute(SESSION_SETTINGS)
    yield c
    conn.close()


@FAST
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=50))
def test_float_rendering_matches_postgres(cur, xs):
    """What we send reads back bit-exact, and the hash renderings agree."""
    cur.execute("SELECT encode(float8send(s::float8), 'hex') FROM unnest(%s::text[]) WITH ORDINALITY u(s, i) "
                "ORDER BY i", ([pg_float(x) for x in xs],))
    for x, (bits,) in zip(xs, cur.fetchall()):
        assert bits == float_field_bits(pg_float(x))
        if x == x:  # NaN has many bit patterns; PostgreSQL and Python agree on the canonical one
            assert bits == struct.pack(">d", x).hex()


@pytest.mark.parametrize("x", [0.0, -0.0, 1e15, 1e16, 123456789012345.0, 1234567890123456.0, 0.0001,
                               0.00001, 5e-324, 1.7976931348623157e308, 0.1, -2.5e-7, 1e22])
def test_float_rendering_edges(cur, x):
    cur.execute("SELECT encode(float8send(%s::float8), 'hex')", (pg_float(x),))
    assert cur.fetchone()[0] == struct.pack(">d", x).hex()


numeric_text = st.from_regex(r"\A[+-]?([0-9]{1,30}(\.[0-9]{0,12})?|\.[0-9]{1,12})([eE][+-]?[0-9]{1,2})?\Z")


@FAST
@given(st.lists(numeric_text, min_size=1, max_size=40))
def test_numeric_rendering_matches_postgres(cur, xs):
    cur.execute("SELECT s::numeric::text FROM unnest(%s::text[]) WITH ORDINALITY u(s, i) ORDER BY i", (xs,))
    for s, (text,) in zip(xs, cur.fetchall()):
        assert pg_numeric(_decimal_of_text(s)) == text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20)
    | st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str).map(Decimal)
    | st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=6),
                      children, max_size=4),
    max_leaves=12)


def _dumps(v):
    return json.dumps(v, default=str, ensure_ascii=False) if not isinstance(v, Decimal) else str(v)


@FAST
@given(st.lists(json_values, min_size=1, max_size=20))
def test_jsonb_rendering_matches_postgres(cur, vs):
    texts = [json.dumps(v, default=lambda d: float(d)) for v in vs]
    cur.execute("SELECT s::jsonb::text FROM unnest(%s::text[]) WITH ORDINALITY u(s, i) ORDER BY i", (texts,))
    for t, (pg,) in zip(texts, cur.fetchall()):
        mine = _to_jsonb(t).replace("\\\\", "\\").replace("\\n", "\n").replace("\\t", "\t").replace("\\r", "\r")
        assert jsonb_text(json.loads(t, parse_float=Decimal)) == pg
        assert mine == pg or "\\" in t


def test_jsonb_duplicate_keys_and_spacing(cur):
    for t in ['{"b":1,"a":2,"b":3}', '{ "aa" : [1 , 2.50, 1e2], "a": {"z":null} }', '"\\u0001\\t"', '[]', '{}']:
        cur.execute("SELECT %s::jsonb::text", (t,))
        assert jsonb_text(json.loads(t, parse_float=Decimal, object_pairs_hook=dict)) == cur.fetchone()[0]


@FAST
@given(st.lists(st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)),
                min_size=1, max_size=40))
def test_timestamp_rendering_matches_postgres(cur, ds):
    cur.execute("SELECT s::timestamp::text FROM unnest(%s::text[]) WITH ORDINALITY u(s, i) ORDER BY i",
                ([pg_timestamp(d) for d in ds],))
    for d, (text,) in zip(ds, cur.fetchall()):
        assert pg_timestamp(d) == text


flat_key = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters='\x00'), max_size=5)
flat_scalar = st.one_of(
    st.from_regex(r"-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,12})?", fullmatch=True),  # as written, scale kept
    st.sampled_from(["-0", "-0.000", "0.0", "1e5", "-2.5E-3", "true", "false", "null"]),
    st.builds(json.dumps, st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters='\x00'), max_size=6),
              ensure_ascii=st.booleans()))
flat_ws = st.sampled_from(["", " ", "\n\t ", "\r"])


def _object_text(members, style) -> str:
    if style == "any":  # whitespace of its own around every token
        return "{" + ",".join(f"{w}{json.dumps(k, ensure_ascii=False)}{w}:{w}{x}{w}" for k, x, w in members) + "}"
    comma, colon = (",", ":") if style == "compact" else (", ", ": ")  # JavaScript / Python spellings
    return "{" + comma.join(f"{json.dumps(k, ensure_ascii=False)}{colon}{x}" for k, x, _ in members) + "}"


@FAST
@given(st.lists(st.tuples(st.lists(st.tuples(flat_key, flat_scalar, flat_ws), max_size=5),
                          st.sampled_from(["any", "compact", "spaced"])), min_size=1, max_size=20))
def test_flat_json_objects_render_as_postgres_does(cur, objects):
    """The fast paths for flat objects (and the fallback for escapes and exponents) against
    jsonb_out: key order by length then bytes, duplicate keys, spacing, negative zero."""
    texts = [_object_text(members, style) for members, style in objects]
    cur.execute("SELECT s::jsonb::text FROM unnest(%s::text[]) WITH ORDINALITY u(s, i) ORDER BY i", (texts,))
    for t, (pg,) in zip(texts, cur.fetchall()):
        copy_field = pg.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
        assert _to_jsonb(t) == copy_field, t


def test_flat_json_fast_path_is_taken_for_plain_objects():
    from migrate.types import _flat_jsonb
    assert _flat_jsonb('{"lr":0.003, "epochs":42,"batch":32,"n":null,"é":"ü","e":-0.0}') == \
        '{"e": 0.0, "n": null, "lr": 0.003, "é": "ü", "batch": 32, "epochs": 42}'  # é: 2 bytes
    for other in ('{"a":1e5}', '{"a":"\\n"}', '{"a":[1]}', '[1]', '{"a":1,}', '{"a" 1}'):
        assert _flat_jsonb(other) is None, other


@FAST
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
                max_size=1100))
def test_row_hash_sum_matches_postgres(cur, lines):
    """A batch's row hashes (one call per batch, spanning a cached unpack format and the
    empty batch) add up to what row_hash_sql sums in PostgreSQL, row by row."""
    cur.execute("SELECT coalesce(sum(('x' || left(md5(x), 16))::bit(64)::bigint::numeric), 0) "
                "FROM unnest(%s::text[]) x", (lines,))
    assert line_hash_sum(lines) == int(cur.fetchone()[0])
    assert bytes_hash_sum([x.encode() for x in lines]) == line_hash_sum(lines)
