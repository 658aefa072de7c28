"""Fixed-width text formatting kernels (digit strings, ISO dates) straight into Arrow buffers."""

from __future__ import annotations

import numpy as np
from numba import njit

from ._arrow import fixed_width_strings
from ._errors import InputError

__all__ = ["format_digits", "format_dates"]


@njit(nogil=True, cache=True)
def _format_digits(values, width, out):
    for i in range(values.shape[0]):
        v = values[i]
        base = i * width
        for p in range(width - 1, -1, -1):
            out[base + p] = 48 + v % 10
            v //= 10


@njit(nogil=True, cache=True)
def _format_dates(year, month, day, out):
    for i in range(year.shape[0]):
        base = i * 10
        y = year[i]
        for p in range(3, -1, -1):
            out[base + p] = 48 + y % 10
            y //= 10
        out[base + 4] = 45  # '-'
        out[base + 5] = 48 + month[i] // 10
        out[base + 6] = 48 + month[i] % 10
        out[base + 7] = 45
        out[base + 8] = 48 + day[i] // 10
        out[base + 9] = 48 + day[i] % 10


def format_digits(values, width: int, *, valid=None):
    """Zero-padded decimal strings of ``width`` characters (values must fit)."""
    values = np.ascontiguousarray(values, dtype=np.int64)
    if len(values) and (values.min() < 0 or (width < 19 and values.max() >= 10**width)):
        raise InputError(f"format_digits: values must be non-negative and below 10**{width}")
    out = np.empty(len(values) * width, dtype=np.uint8)
    _format_digits(values, width, out)
    return fixed_width_strings(out, width, valid)


def format_dates(year, month, day, *, valid=None):
    """'YYYY-MM-DD' strings; a month or day of 0 is written '00' (unknown)."""
    year = np.ascontiguousarray(year, dtype=np.int32)
    month = np.ascontiguousarray(month, dtype=np.int32)
    day = np.ascontiguousarray(day, dtype=np.int32)
    if not (len(year) == len(month) == len(day)):
        raise InputError("format_dates: year, month and day differ in length")
    if len(year) and (year.min() < 0 or year.max() > 9999 or month.min() < 0 or month.max() > 99 or day.min() < 0 or day.max() > 99):
        raise InputError("format_dates: year must be 0-9999, month and day 0-99")
    out = np.empty(len(year) * 10, dtype=np.uint8)
    _format_dates(year, month, day, out)
    return fixed_width_strings(out, 10, valid)
