"""Number parsing and UTF-8 checks over Arrow buffers, with a status per value.

`parse_numbers` reads decimals as files write them: optional sign, digits with optional
thousands separators (space, no-break space, apostrophe, or the separator that is not the
decimal one), and a decimal separator that is '.', ',' or either (auto: when both appear,
the last one is the decimal separator; a lone ',' is a decimal comma, as in French files).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._arrow import byte_classes, string_array_from_buffers, string_buffers, trimmed

__all__ = ["parse_numbers", "decimal_evidence", "SEP_POINT", "SEP_COMMA", "SEP_AMBIGUOUS", "parse_integers",
           "utf8_valid", "latin1_to_utf8", "NUM_OK", "NUM_MISSING", "NUM_BAD", "DECIMAL_AUTO", "DECIMAL_POINT",
           "DECIMAL_COMMA"]

NUM_OK = 0
NUM_MISSING = 1
NUM_BAD = 2
DECIMAL_AUTO = 0
DECIMAL_POINT = 1
DECIMAL_COMMA = 2

_POW10 = np.array([10.0 ** k for k in range(23)])


@njit(nogil=True, cache=True)
def _parse_numbers(offsets, data, valid, decimal, pow10, value, status):
    for i in range(offsets.shape[0] - 1):
        value[i] = 0.0
        if not valid[i]:
            status[i] = NUM_MISSING
            continue
        a, b = trimmed(data, offsets[i], offsets[i + 1])
        if a == b:
            status[i] = NUM_MISSING
            continue
        # decide the decimal separator of this value
        dec = 46
        if decimal == 2:
            dec = 44
        elif decimal == 0:
            last_dot = -1
            last_comma = -1
            for j in range(a, b):
                if data[j] == 46:
                    last_dot = j
                elif data[j] == 44:
                    last_comma = j
            if last_comma > last_dot:
                dec = 44
        neg = False
        j = a
        if data[j] == 45 or data[j] == 43:
            neg = data[j] == 45
            j += 1
        mant = 0
        ndig = 0
        frac = 0
        seen_dec = False
        ok = j < b
        while j < b:
            c = data[j]
            if 48 <= c <= 57:
                if ndig < 18:
                    mant = mant * 10 + (c - 48)
                    if seen_dec:
                        frac += 1
                elif not seen_dec:
                    ok = False  # too many digits for an exact amount
                    break
                ndig += 1
            elif c == dec:
                if seen_dec:
                    ok = False
                    break
                seen_dec = True
            elif not seen_dec and (c == 32 or c == 39 or (c == 46 and dec == 44) or (c == 44 and dec == 46)):
                pass  # thousands separator
            elif c == 0xC2 and j + 1 < b and data[j + 1] == 0xA0 and not seen_dec:
                j += 1  # no-break space
            elif c == 0xE2 and j + 2 < b and data[j + 1] == 0x80 and data[j + 2] == 0xAF and not seen_dec:
                j += 2  # narrow no-break space
            else:
                ok = False
                break
            j += 1
        if not ok or ndig == 0 or frac > 22:
            status[i] = NUM_BAD
            continue
        v = mant / pow10[frac]
        value[i] = -v if neg else v
        status[i] = NUM_OK


# what a value says of its decimal separator (decimal_evidence)
SEP_NONE = 0  # no separator, or nothing to tell
SEP_POINT = 1  # both '.' and ',', the last one '.': "1,234.56"
SEP_COMMA = 2  # both, the last one ',': "1.234,56"
SEP_AMBIGUOUS = 3  # 1-3 digits (not a lone 0), one '.' or ',', 3 digits: "1,500", "12.500"


@njit(nogil=True, cache=True)
def _decimal_evidence(offsets, data, valid, out):
    for i in range(offsets.shape[0] - 1):
        out[i] = SEP_NONE
        if not valid[i]:
            continue
        a, b = trimmed(data, offsets[i], offsets[i + 1])
        dots = 0
        commas = 0
        last = -1
        for j in range(a, b):
            if data[j] == 46:
                dots += 1
                last = j
            elif data[j] == 44:
                commas += 1
                last = j
        if dots and commas:
            out[i] = SEP_POINT if data[last] == 46 else SEP_COMMA
        elif dots + commas == 1 and b - last - 1 == 3:
            # one to three digits, the separator, three digits: a thousands group or three decimals
            start = a + 1 if data[a] == 45 or data[a] == 43 else a
            digits = 1 <= last - start <= 3 and not (last - start == 1 and data[start] == 48)
            for j in range(start, b):
                if j != last and not 48 <= data[j] <= 57:
                    digits = False
            if digits:
                out[i] = SEP_AMBIGUOUS


def decimal_evidence(values) -> np.ndarray:
    """Per value of a string array, what it says of its decimal separator (SEP_*): a file whose
    separator is not given is read by the convention its unambiguous values show."""
    offsets, data, valid = string_buffers(values)
    out = np.empty(len(offsets) - 1, np.int8)
    _decimal_evidence(offsets, data, valid, out)
    return out


def parse_numbers(values, *, decimal: int = DECIMAL_AUTO) -> tuple[np.ndarray, np.ndarray]:
    """``(value float64, status int8)`` for a string array; value is 0.0 unless status is NUM_OK."""
    if decimal not in (DECIMAL_AUTO, DECIMAL_POINT, DECIMAL_COMMA):
        raise ValueError(f"decimal must be DECIMAL_AUTO, DECIMAL_POINT or DECIMAL_COMMA, got {decimal!r}")
    offsets, data, valid = string_buffers(values)
    n = len(offsets) - 1
    value = np.empty(n, np.float64)
    status = np.empty(n, np.int8)
    _parse_numbers(offsets, data, valid, decimal, _POW10, value, status)
    return value, status


@njit(nogil=True, cache=True)
def _utf8_valid(offsets, data, out):
    for i in range(offsets.shape[0] - 1):
        j = offsets[i]
        end = offsets[i + 1]
        ok = True
        while j < end:
            b0 = data[j]
            if b0 < 0x80:
                j += 1
                continue
            if 0xC2 <= b0 <= 0xDF:
                need = 1
            elif 0xE0 <= b0 <= 0xEF:
                need = 2
            elif 0xF0 <= b0 <= 0xF4:
                need = 3
            else:
                ok = False
                break
            if j + need >= end:
                ok = False
                break
            for k in range(1, need + 1):
                if (data[j + k] & 0xC0) != 0x80:
                    ok = False
                    break
            if not ok:
                break
            if need == 2:
                cp = ((b0 & 0x0F) << 12) | ((data[j + 1] & 0x3F) << 6) | (data[j + 2] & 0x3F)
                if cp < 0x800 or (0xD800 <= cp <= 0xDFFF):
                    ok = False
                    break
            elif need == 3:
                cp = ((b0 & 0x07) << 18) | ((data[j + 1] & 0x3F) << 12) | ((data[j + 2] & 0x3F) << 6) | (data[j + 3] & 0x3F)
                if cp < 0x10000 or cp > 0x10FFFF:
                    ok = False
                    break
            j += need + 1
        out[i] = ok


def utf8_valid(values) -> np.ndarray:
    """True where the value is valid UTF-8 (nulls count as valid). Takes string or binary arrays."""
    import pyarrow as pa

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_binary(values.type):
        values = values.view(pa.string())
    elif pa.types.is_large_binary(values.type):
        values = values.view(pa.large_string())
    offsets, data, _ = string_buffers(values)
    if not byte_classes(offsets, data)[0]:  # plain ASCII: valid UTF-8
        return np.ones(len(offsets) - 1, np.bool_)
    out = np.empty(len(offsets) - 1, np.bool_)
    _utf8_valid(offsets, data, out)
    return out


@njit(nogil=True, cache=True)
def _latin1(offsets, data, convert, out_offsets, out):
    o = 0
    out_offsets[0] = 0
    for i in range(offsets.shape[0] - 1):
        for j in range(offsets[i], offsets[i + 1]):
            c = data[j]
            if convert[i] and c >= 0x80:
                out[o] = 0xC0 | (c >> 6)
                out[o + 1] = 0x80 | (c & 0x3F)
                o += 2
            else:
                out[o] = c
                o += 1
        out_offsets[i + 1] = o


def latin1_to_utf8(values, convert: np.ndarray):
    """Re-decode the values where ``convert`` is True as Latin-1; returns a string array."""
    import pyarrow as pa

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_binary(values.type):
        values = values.view(pa.string())
    elif pa.types.is_large_binary(values.type):
        values = values.view(pa.large_string())
    offsets, data, valid = string_buffers(values)
    out_offsets = np.empty(len(offsets), np.int64)
    out = np.empty(max(2 * len(data), 1), np.uint8)
    _latin1(offsets, data, np.ascontiguousarray(convert, np.bool_), out_offsets, out)
    if out_offsets[-1] < 2**31:
        out_offsets = out_offsets.astype(np.int32)
    return string_array_from_buffers(out_offsets, out[: out_offsets[-1]], valid)


@njit(nogil=True, cache=True)
def _parse_integers(offsets, data, valid, value, status):
    for i in range(offsets.shape[0] - 1):
        value[i] = 0
        if not valid[i]:
            status[i] = NUM_MISSING
            continue
        a, b = trimmed(data, offsets[i], offsets[i + 1])
        if a == b:
            status[i] = NUM_MISSING
            continue
        neg = False
        if data[a] == 45 or data[a] == 43:
            neg = data[a] == 45
            a += 1
        if a == b:
            status[i] = NUM_BAD
            continue
        v = 0
        ok = True
        for j in range(a, b):
            c = data[j]
            if c < 48 or c > 57:
                ok = False
                break
            d = c - 48
            if v > (9223372036854775807 - d) // 10:
                ok = False  # does not fit in int64
                break
            v = v * 10 + d
        if not ok:
            status[i] = NUM_BAD
            continue
        value[i] = -v if neg else v
        status[i] = NUM_OK


def parse_integers(values) -> tuple[np.ndarray, np.ndarray]:
    """``(value int64, status int8)``: exact 64-bit integers (record ids); no separators, no decimals."""
    offsets, data, valid = string_buffers(values)
    n = len(offsets) - 1
    value = np.empty(n, np.int64)
    status = np.empty(n, np.int8)
    _parse_integers(offsets, data, valid, value, status)
    return value, status
