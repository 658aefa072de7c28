"""Date parsing kernel over UTF-8 Arrow buffers, keeping unknown parts unknown.

Accepted forms (surrounding spaces ignored): YYYY-MM-DD, YYYY/MM/DD, YYYYMMDD,
DD/MM/YYYY, DD-MM-YYYY, DD.MM.YYYY, YYYY-MM-DD followed by a time, and the month forms
YYYY-MM, YYYY/MM, MM/YYYY (day 0). The time (ignored: only the day is kept) must be a real
one: 'T' or a space, then hh:mm[:ss[.fraction]] (hh <= 23, mm and ss <= 59, ',' also
separates the fraction), then optionally Z, +hh:mm, +hhmm or +hh (or '-'); anything else
after the date ('2015-01-01 xyz', '2015-01-01T25:99:99') makes the value a bad date. With ``allow_unknown`` a month or
day of 00 means unknown (1962-00-00: born in 1962, month unknown); otherwise it is an error.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._arrow import string_buffers, trimmed

__all__ = ["parse_dates", "DATE_OK", "DATE_MISSING", "DATE_BAD", "days_from_civil", "civil_month", "month_index",
           "first_day_of_month", "civil_parts"]

DATE_OK = 0
DATE_MISSING = 1
DATE_BAD = 2


@njit(nogil=True, cache=True)
def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y = y - (1 if m <= 2 else 0)
    era = y // 400  # floor division (Python semantics in Numba), right for negative years too
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@njit(nogil=True, cache=True)
def civil_month(day):
    """Absolute month index (year * 12 + month - 1) of a day count since 1970-01-01
    (H. Hinnant's civil_from_days, year and month only)."""
    z = np.int64(day) + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    m = mp + 3 if mp < 10 else mp - 9
    return (yoe + era * 400 + (1 if m <= 2 else 0)) * 12 + m - 1


@njit(nogil=True, cache=True)
def _civil_parts(days, valid, year, month, day):
    for i in range(days.shape[0]):
        if not valid[i]:
            year[i] = 0
            month[i] = 0
            day[i] = 0
            continue
        z = np.int64(days[i]) + 719468
        era = z // 146097
        doe = z - era * 146097
        yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
        doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
        mp = (5 * doy + 2) // 153
        m = mp + 3 if mp < 10 else mp - 9
        year[i] = yoe + era * 400 + (1 if m <= 2 else 0)
        month[i] = m
        day[i] = doy - (153 * mp + 2) // 5 + 1


def civil_parts(days: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Year (int16), month and day (int8) of day counts since 1970-01-01 (H. Hinnant's
    civil_from_days, proleptic Gregorian); 0, 0, 0 where ``valid`` is false. Years must fit
    an int16 (the caller's dates are civil-register dates)."""
    n = len(days)
    year = np.empty(n, np.int16)
    month = np.empty(n, np.int8)
    day = np.empty(n, np.int8)
    _civil_parts(np.asarray(days), np.asarray(valid, np.bool_), year, month, day)
    return year, month, day


_TABLE_MAX = 1 << 20  # entries of a lookup table (days or months spanned) worth building


@njit(nogil=True, cache=True)
def _month_of_days(days, valid, out):
    n = days.shape[0]
    lo = np.int64(0)
    hi = np.int64(-1)
    for i in range(n):
        if valid[i]:
            d = np.int64(days[i])
            if hi < lo:
                lo = d
                hi = d
            elif d < lo:
                lo = d
            elif d > hi:
                hi = d
    if hi < lo:
        for i in range(n):
            out[i] = -1
        return
    span = hi - lo + 1
    if span <= _TABLE_MAX and span <= 4 * n:
        # dates span a few decades: a table of the month of every day in range, then lookups
        table = np.empty(span, np.int64)
        m = civil_month(lo)
        t = 0
        while t < span:
            nxt = m + 1
            end = days_from_civil(nxt // 12, nxt % 12 + 1, 1) - lo  # first day of the next month
            if end > span:
                end = span
            while t < end:
                table[t] = m
                t += 1
            m = nxt
        for i in range(n):
            out[i] = table[np.int64(days[i]) - lo] if valid[i] else -1
        return
    for i in range(n):
        out[i] = civil_month(days[i]) if valid[i] else -1


@njit(nogil=True, cache=True)
def _days_of_month(month_index, out):
    n = month_index.shape[0]
    if n == 0:
        return
    lo = month_index[0]
    hi = month_index[0]
    for i in range(n):
        if month_index[i] < lo:
            lo = month_index[i]
        elif month_index[i] > hi:
            hi = month_index[i]
    span = hi - lo + 1
    if span <= _TABLE_MAX and span <= 4 * n:
        table = np.empty(span, np.int32)
        for t in range(span):
            mi = lo + t
            table[t] = days_from_civil(mi // 12, mi % 12 + 1, 1)
        for i in range(n):
            out[i] = table[month_index[i] - lo]
        return
    for i in range(n):
        mi = month_index[i]
        out[i] = days_from_civil(mi // 12, mi % 12 + 1, 1)


def month_index(days, valid=None) -> np.ndarray:
    """Absolute month index (year * 12 + month - 1) of day counts since 1970-01-01 (the
    values of an Arrow date32 column); -1 where ``valid`` is false."""
    days = np.ascontiguousarray(days)
    if days.dtype.kind not in "iu":
        raise TypeError(f"month_index: day counts must be integers, got dtype {days.dtype}")
    valid = np.ones(len(days), np.bool_) if valid is None else np.ascontiguousarray(valid, dtype=np.bool_)
    out = np.empty(len(days), np.int64)
    _month_of_days(days, valid, out)
    return out


def first_day_of_month(month_index) -> np.ndarray:
    """Days since 1970-01-01 (int32, for an Arrow date32 column) of the first day of each
    absolute month index (year * 12 + month - 1)."""
    month_index = np.ascontiguousarray(month_index, dtype=np.int64)
    out = np.empty(len(month_index), np.int32)
    _days_of_month(month_index, out)
    return out


@njit(nogil=True, cache=True)
def _dim(y, m):
    if m == 2:
        leap = (y % 4 == 0 and y % 100 != 0) or (y % 400 == 0)
        return 29 if leap else 28
    if m == 4 or m == 6 or m == 9 or m == 11:
        return 30
    return 31


@njit(nogil=True, cache=True)
def _num(data, a, b):
    v = 0
    for j in range(a, b):
        c = data[j]
        if c < 48 or c > 57:
            return -1
        v = v * 10 + (c - 48)
    return v


@njit(nogil=True, cache=True)
def _two(data, a, b, i, most):
    """The 2-digit number at data[i:i+2] if within [a, b) and <= most, else -1."""
    if i + 2 > b:
        return -1
    v = _num(data, i, i + 2)
    return v if v <= most else -1


@njit(nogil=True, cache=True)
def _time_ok(data, a, b):
    """Is data[a:b] a time hh:mm[:ss[(.|,)digits]] with an optional offset Z, +hh:mm,
    +hhmm, +hh ('-' too)? (Python's datetime.fromisoformat accepts all of these.)"""
    if _two(data, a, b, a, 23) < 0 or a + 2 >= b or data[a + 2] != 58 or _two(data, a, b, a + 3, 59) < 0:
        return False
    i = a + 5
    if i < b and data[i] == 58:  # :ss
        if _two(data, a, b, i + 1, 59) < 0:
            return False
        i += 3
        if i < b and (data[i] == 46 or data[i] == 44):  # .fraction or ,fraction
            j = i + 1
            while j < b and 48 <= data[j] <= 57:
                j += 1
            if j == i + 1:
                return False
            i = j
    if i == b:
        return True
    if data[i] == 90:  # Z
        return i + 1 == b
    if data[i] != 43 and data[i] != 45:  # + or -
        return False
    i += 1
    if _two(data, a, b, i, 23) < 0:
        return False
    i += 2
    if i == b:
        return True
    if data[i] == 58:
        i += 1
    return _two(data, a, b, i, 59) >= 0 and i + 2 == b


@njit(nogil=True, cache=True)
def _parse(offsets, data, valid, allow_unknown, year, month, day, ordinal, status):
    for i in range(offsets.shape[0] - 1):
        year[i] = 0
        month[i] = 0
        day[i] = 0
        ordinal[i] = 0
        if not valid[i]:
            status[i] = DATE_MISSING
            continue
        a, b = trimmed(data, offsets[i], offsets[i + 1])
        n = b - a
        if n == 0:
            status[i] = DATE_MISSING
            continue
        y = -1
        m = -1
        d = -1
        if n >= 10 and (data[a + 4] == 45 or data[a + 4] == 47) and data[a + 7] == data[a + 4] and \
                (n == 10 or data[a + 10] == 84 or data[a + 10] == 32):
            y = _num(data, a, a + 4)
            m = _num(data, a + 5, a + 7)
            d = _num(data, a + 8, a + 10)
            if n > 10 and not _time_ok(data, a + 11, b):
                y = -1
        elif n == 10 and (data[a + 2] == 47 or data[a + 2] == 45 or data[a + 2] == 46) and data[a + 5] == data[a + 2]:
            d = _num(data, a, a + 2)
            m = _num(data, a + 3, a + 5)
            y = _num(data, a + 6, a + 10)
        elif n == 8:
            y = _num(data, a, a + 4)
            m = _num(data, a + 4, a + 6)
            d = _num(data, a + 6, a + 8)
        elif n == 7 and (data[a + 4] == 45 or data[a + 4] == 47):
            y = _num(data, a, a + 4)
            m = _num(data, a + 5, a + 7)
            d = 0
        elif n == 7 and data[a + 2] == 47:
            m = _num(data, a, a + 2)
            y = _num(data, a + 3, a + 7)
            d = 0
        if y < 0 or m < 0 or d < 0 or y == 0:
            status[i] = DATE_BAD
            continue
        if m > 12 or (m == 0 and d != 0):
            status[i] = DATE_BAD
            continue
        if m == 0 or d == 0:
            if not allow_unknown and m == 0:
                status[i] = DATE_BAD
                continue
        if m > 0 and d > _dim(y, m):
            status[i] = DATE_BAD
            continue
        year[i] = y
        month[i] = m
        day[i] = d
        if m > 0:
            ordinal[i] = days_from_civil(y, m, d if d > 0 else 1)
        status[i] = DATE_OK if (allow_unknown or d > 0 or n == 7) else DATE_BAD


def parse_dates(values, *, allow_unknown: bool = False) -> dict:
    """Parse a string array of dates.

    Returns numpy arrays ``year`` (int16), ``month`` and ``day`` (int8, 0 = unknown),
    ``ordinal`` (int32 days since 1970-01-01, of the first day when the day is unknown; 0
    when the month is unknown) and ``status`` (DATE_OK / DATE_MISSING / DATE_BAD). Without
    ``allow_unknown`` only the month forms may omit the day.
    """
    offsets, data, valid = string_buffers(values)
    n = len(offsets) - 1
    year = np.empty(n, np.int16)
    month = np.empty(n, np.int8)
    day = np.empty(n, np.int8)
    ordinal = np.empty(n, np.int32)
    status = np.empty(n, np.int8)
    _parse(offsets, data, valid, bool(allow_unknown), year, month, day, ordinal, status)
    return {"year": year, "month": month, "day": day, "ordinal": ordinal, "status": status}
