"""Amounts of money as exact decimals: ``decimal(18, 2)`` in every dataset after ingest.

An amount is a whole number of cents. Ingest turns each declared amount into cents (an
amount with a fraction of a cent is rejected, ``sub_cent_amount``), and from there the
amounts travel as Arrow ``decimal128(18, 2)``, which Parquet stores as 64-bit integers of
cents: exact for every reader (DuckDB, Spark, pandas see DECIMAL(18,2)), and measured 8-34%
smaller per export table than the doubles they replace (README, "Exports": format 2), since
zstd compresses the integer cents where it cannot compress the mantissas of the doubles.

Conversions here work on the buffers: the low 64 bits of a decimal128 are its cents (every
amount below 2^63 cents), so neither way goes through Python's ``Decimal``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from nirlink.kernels._arrow import decimal128_words

__all__ = ["MONEY", "money_from_cents", "cents_of", "cents_from_amounts", "round_cents"]

MONEY = pa.decimal128(18, 2)
_MAX_CENTS = 10**18 - 1  # decimal(18, 2): 18 digits
SUB_CENT_TOLERANCE = 1e-6  # of a cent: what a double's rounding of a 2-decimal number may leave


def round_cents(euros: np.ndarray) -> np.ndarray:
    """Float amounts in euros to the nearest cent (int64); NaN must be handled by the caller."""
    return np.round(np.asarray(euros, np.float64) * 100.0).astype(np.int64)


def money_from_cents(cents: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """A decimal(18, 2) array of ``cents`` (int64); ``valid`` False gives a null."""
    cents = np.asarray(cents, dtype=np.int64)
    # the words in a buffer of Arrow's memory pool, which reuses the pages it frees: a fresh
    # numpy array of this size is new pages from the kernel on every call (the first write
    # faults each one in): 34-40 ms a call against 3-9 ms here, in a loop over 1.3M amounts;
    # the aggregate stage makes one per amount column and bucket (a quarter of a resource
    # task's time in a profile at 200k persons)
    data = pa.allocate_buffer(16 * len(cents))
    decimal128_words(cents, np.frombuffer(data, np.int64))  # two's complement sign extension to 128 bits
    validity = None
    null_count = 0
    if valid is not None and not np.all(valid):
        arr = pa.array(np.asarray(valid, bool))
        validity, null_count = arr.buffers()[1], len(cents) - int(np.count_nonzero(valid))
    return pa.Array.from_buffers(MONEY, len(cents), [validity, data], null_count=null_count)


def cents_of(col: pa.Array | pa.ChunkedArray, null: int = 0) -> np.ndarray:
    """The cents of a money column as int64 (nulls as ``null``); float columns (files written
    before format 2, or a caller's) are rounded to the cent."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
        values = col.to_numpy(zero_copy_only=False).astype(np.float64)
        missing = np.isnan(values)
        out = round_cents(np.where(missing, 0.0, values))
        out[missing] = null
        return out
    if not pa.types.is_decimal128(col.type):
        raise TypeError(f"expected an amount (decimal or number), got {col.type}")
    if col.type.scale != 2:
        col = col.cast(MONEY)
    words = np.frombuffer(col.buffers()[1], np.int64, count=2 * (col.offset + len(col)))
    out = words[2 * col.offset::2].copy()
    if col.null_count:
        out[~np.asarray(col.is_valid().to_numpy(zero_copy_only=False), bool)] = null
    return out


def cents_from_amounts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cents, exact) of float amounts: ``exact`` is False where the amount is not a whole
    number of cents (beyond SUB_CENT_TOLERANCE), is infinite or does not fit decimal(18, 2);
    NaN (missing) gives 0, exact."""
    scaled = np.asarray(values, np.float64) * 100.0
    nan = np.isnan(scaled)
    finite = np.isfinite(scaled)
    rounded = np.where(finite, np.round(scaled), 0.0)
    tolerance = np.maximum(SUB_CENT_TOLERANCE, np.abs(rounded) * 1e-15)  # a double's own rounding
    exact = nan | (finite & (np.abs(scaled - rounded) <= tolerance) & (np.abs(rounded) <= _MAX_CENTS))
    return np.where(exact & finite, rounded, 0.0).astype(np.int64), exact
