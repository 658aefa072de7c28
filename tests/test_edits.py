"""Pairs within two edits (kernels/_edits.py) against DuckDB's levenshtein and substr, the SQL
the exact NIR u count used before the kernel, as oracles."""

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nirlink.kernels._arrow import string_buffers
from nirlink.kernels._edits import near_pairs, segment_keys, within_edits

# a small alphabet makes near strings common; 'A' and '1' share a histogram bin (low 4 bits)
TEXT = st.text(alphabet="01A2", min_size=0, max_size=9)


def _columns(strings: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    offsets, data, _ = string_buffers(pa.array(strings, pa.string()))
    return np.arange(len(strings), dtype=np.int64), data, offsets


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=60), st.integers(0, 2))
def test_within_edits_is_duckdbs_levenshtein(pairs, k):
    con = duckdb.connect()
    expected = [d <= k for (d,) in con.execute(
        "select levenshtein(a, b) from (select unnest($a) as a, unnest($b) as b)",
        {"a": [a for a, _ in pairs], "b": [b for _, b in pairs]}).fetchall()]
    assert [within_edits(a, b, k) for a, b in pairs] == expected


@settings(max_examples=200, deadline=None)
@given(TEXT, st.integers(1, 6), st.integers(1, 7))
def test_segment_keys_equal_exactly_when_sql_substrings_are(s, p, w):
    others = [s, s[: p + w - 2], s + "0", "A" + s, s[:-1] + "2" if s else "2"]
    ids, data, offsets = _columns(others)
    keys = segment_keys(data, offsets, p, w)
    subs = [o[p - 1:p - 1 + w] for o in others]  # SQL substr(o, p, w) on ASCII
    for i in range(len(others)):
        for j in range(len(others)):
            assert (keys[i] == keys[j]) == (subs[i] == subs[j]), (others[i], others[j], p, w)


def _sql_pairs(a: list[str], b: list[str], segments, prefix: int, k: int) -> list[tuple[int, int]]:
    """The pairs the exact u count's SQL joined: agreeing on a segment (each pair under the first
    it agrees on), distinct ids, sharing the prefix or within k edits."""
    con = duckdb.connect()
    con.execute("create table a as select * from (select unnest($s) as s, unnest($i) as id)",
                {"s": a, "i": list(range(len(a)))})
    con.execute("create table b as select * from (select unnest($s) as s, unnest($i) as id)",
                {"s": b, "i": list(range(len(b)))})
    seg = [f"substr(x.s, {p}, {w}) = substr(y.s, {p}, {w})" for p, w in segments]
    joins = " union all ".join(
        f"select x.id as i, y.id as j from a x join b y on {seg[s]} and x.id <> y.id"
        + "".join(f" and not {seg[e]}" for e in range(s))
        + f" where substr(x.s, 1, {prefix}) = substr(y.s, 1, {prefix}) or levenshtein(x.s, y.s) <= {k}"
        for s in range(len(seg)))
    return sorted(con.execute(joins).fetchall())


@settings(max_examples=150, deadline=None)
@given(st.lists(TEXT, min_size=0, max_size=25), st.lists(TEXT, min_size=0, max_size=25),
       st.sampled_from([((1, 2), (3, 2), (5, 1)), ((1, 3),), ((2, 1), (1, 1))]), st.integers(1, 4),
       st.integers(0, 2))
def test_near_pairs_are_the_sql_joins_pairs(a, b, segments, prefix, k):
    ia, ib = near_pairs(_columns(a), _columns(b), segments, prefix, k)
    got = sorted(zip(ia.tolist(), ib.tolist()))
    assert len(got) == len(set(got))  # each pair once
    assert got == _sql_pairs(a, b, segments, prefix, k)


def test_near_pairs_refuses_long_strings_and_bad_segments():
    long = _columns(["0" * 300])
    with pytest.raises(ValueError, match="255 bytes"):
        near_pairs(long, long, ((1, 2),), 3)
    with pytest.raises(ValueError, match="segment"):
        segment_keys(*_columns(["012"])[1:], 1, 8)


def _edited(s: str, ops: list[tuple[str, int, str]]) -> str:
    for kind, pos, ch in ops:
        p = pos % (len(s) + 1)
        if kind == "sub" and p < len(s):
            s = s[:p] + ch + s[p + 1:]
        elif kind == "ins":
            s = s[:p] + ch + s[p:]
        elif kind == "del" and p < len(s):
            s = s[:p] + s[p + 1:]
        elif kind == "swap" and p + 1 < len(s):
            s = s[:p] + s[p + 1] + s[p] + s[p + 2:]
    return s


BODY = st.one_of(st.text(alphabet="0123456789AB", min_size=10, max_size=14),
                 st.text(alphabet="0123456789AB", min_size=0, max_size=15))
EDITS = st.lists(st.tuples(st.sampled_from(["sub", "ins", "del", "swap"]), st.integers(0, 16),
                           st.sampled_from("01A9")), max_size=3)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(BODY, EDITS, st.booleans()), min_size=1, max_size=40))
def test_guarded_nir_levels_equal_the_plain_edit_distances(cases):
    """The identity model's NIR levels 'one edit or transposition' and 'two edits' put a cheap
    necessary condition before the edit distance (linkage/_level_sql.py): on bodies a few edits
    apart (and unrelated ones), each level selects exactly the pairs DuckDB's plain distance does."""
    a = [s for s, _, _ in cases]
    b = [_edited(s, ops) if related else _edited("1850375123456", ops) for s, ops, related in cases]
    assert _guards_hold(a, b) == []


def _guards_hold(a: list[str], b: list[str]) -> list[tuple[str, str]]:
    """The pairs where a guarded NIR level differs from the plain distance (a NULL against a
    FALSE included)."""
    from nirlink.linkage import identity_model

    levels = {lv.label: lv.sql for c in identity_model().comparisons if c.name == "nir" for lv in c.levels}
    con = duckdb.connect()
    return con.execute(
        f"select l.nir_body, r.nir_body from (select unnest($a) as nir_body, unnest($i) as i) l "
        "join (select unnest($b) as nir_body, unnest($i) as i) r on l.i = r.i "
        f"where ({levels['one edit or transposition']}) is distinct from "
        "(damerau_levenshtein(l.nir_body, r.nir_body) <= 1) "
        f"or ({levels['two edits']}) is distinct from (levenshtein(l.nir_body, r.nir_body) <= 2)",
        {"a": a, "b": b, "i": list(range(len(a)))}).fetchall()


@pytest.mark.parametrize("length", [10, 11, 12, 13, 14])
def test_guarded_nir_levels_on_every_one_and_two_edits(length):
    """Every single edit and every pair of edits of a body (substitution, insertion, deletion,
    transposition, at every position): the windows' edges are where a guard could be wrong."""
    base = "0123456789ABCDE"[:length]
    ops = [(kind, p, "X") for kind in ("sub", "ins", "del", "swap") for p in range(length + 1)]
    once = [_edited(base, [op]) for op in ops]
    twice = [_edited(_edited(base, [o1]), [(k, p, "Y")]) for o1 in ops for k, p, _ in ops]
    others = once + twice
    assert _guards_hold([base] * len(others), others) == []


def test_the_nir_guards_turn_away_unrelated_bodies():
    """The guards are not always true: two unrelated 13-character bodies skip both distances."""
    from nirlink.linkage._level_sql import WITHIN_ONE_EDIT, WITHIN_TWO_EDITS

    con = duckdb.connect()
    sql = "select {} from (select '1850375123456' as nir_body) l, (select '{}' as nir_body) r"
    for guard in (WITHIN_ONE_EDIT, WITHIN_TWO_EDITS):
        assert con.execute(sql.format(guard, "2920613987654")).fetchone() == (False,)
        assert con.execute(sql.format(guard, "1850375123465")).fetchone() == (True,)  # a transposition


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.none() | st.text(alphabet="ab ", max_size=8), st.none() | st.text(alphabet="ab ", max_size=4)),
                min_size=1, max_size=40))
def test_guarded_first_names_level_equals_the_plain_token_search(pairs):
    """The identity model's 'one of the first names' level (a substring test before the token
    list) selects exactly the pairs of the plain list_contains(string_split(...))."""
    from nirlink.linkage import identity_model

    level = next(lv.sql for c in identity_model().comparisons if c.name == "first_name" for lv in c.levels
                 if lv.label == "one of the first names")
    con = duckdb.connect()
    rows = con.execute(
        f"select coalesce({level}, false), coalesce(list_contains(string_split(r.first_names_norm, ' '), "
        "l.first_name_norm), false) from (select unnest($y::varchar[]) as first_name_norm, unnest($i) as i) l "
        "join (select unnest($x::varchar[]) as first_names_norm, unnest($i) as i) r on l.i = r.i",
        {"y": [y for _, y in pairs], "x": [x for x, _ in pairs], "i": list(range(len(pairs)))}).fetchall()
    assert [a for a, _ in rows] == [b for _, b in rows], pairs
