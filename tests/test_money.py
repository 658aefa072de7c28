"""Amounts as decimal(18, 2) (engine/io/_money.py): conversions against Python's Decimal, the
ingest's sub-cent rejects, and what the Parquet files hold."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given
from hypothesis import strategies as st

from nirlink.engine.io._datasets import write_parquet
from nirlink.engine.io._money import MONEY, cents_from_amounts, cents_of, money_from_cents

CENTS = st.integers(min_value=-(10**17), max_value=10**17)


@given(st.lists(st.one_of(st.none(), CENTS), max_size=60), st.integers(0, 5))
def test_money_from_cents_equals_decimals(values, offset):
    cents = np.array([0 if v is None else v for v in values], np.int64)
    valid = np.array([v is not None for v in values], bool)
    arr = money_from_cents(cents, valid=valid)
    assert arr.type == MONEY
    # oracle: pyarrow's own decimals built from Python Decimal values
    want = pa.array([None if v is None else Decimal(v).scaleb(-2) for v in values], MONEY)
    assert arr.equals(want)
    # and back, also from a slice (an offset into the buffers)
    back = cents_of(arr.slice(offset), null=-1)
    assert back.tolist() == [-1 if v is None else v for v in values[offset:]]
    assert cents_of(pa.chunked_array([arr[:offset], arr[offset:]], MONEY), null=-1).tolist() == \
        [-1 if v is None else v for v in values]


@given(st.lists(st.integers(-(10**13), 10**13), max_size=50))
def test_float_amounts_of_whole_cents_are_exact(cents):
    # a double read from text ("1234.56") is the nearest double, not the exact value: still exact cents
    values = np.array([float(Decimal(c).scaleb(-2)) for c in cents], np.float64)
    got, exact = cents_from_amounts(values)
    assert exact.all()
    assert got.tolist() == cents


@given(st.decimals(min_value=-10**6, max_value=10**6, places=4, allow_nan=False))
def test_sub_cent_amounts_are_not_exact(value):
    got, exact = cents_from_amounts(np.array([float(value)]))
    whole = value == value.quantize(Decimal("0.01"))
    assert bool(exact[0]) == whole
    if whole:
        assert got[0] == int(value * 100)


def test_missing_infinite_and_too_large_amounts():
    got, exact = cents_from_amounts(np.array([np.nan, np.inf, -np.inf, 1e17, 12.5]))
    assert exact.tolist() == [True, False, False, False, True]
    assert got.tolist() == [0, 0, 0, 0, 1250]


def test_money_is_stored_as_integer_cents(tmp_path):
    table = pa.table({"record_id": pa.array(np.arange(1000, dtype=np.int64)),
                      "amount": money_from_cents(np.arange(1000, dtype=np.int64) * 37)})
    write_parquet(table, tmp_path / "x.parquet")
    meta = pq.read_metadata(tmp_path / "x.parquet")
    cols = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i) for i in range(meta.num_columns)}
    assert cols["amount"].physical_type == "INT64"
    assert "DELTA_BINARY_PACKED" in cols["record_id"].encodings
    back = pq.read_table(tmp_path / "x.parquet")
    assert back.schema.field("amount").type == MONEY
    assert back.equals(table)
