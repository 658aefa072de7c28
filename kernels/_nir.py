"""NIR (French social security number) kernels: key arithmetic and formatting.

A NIR is 13 characters (sex, 2-digit year, 2-digit month, 2-char department, 3-digit
commune, 3-digit order) followed by a 2-digit key = 97 - (n mod 97), where n is the
13-character body read as a number after replacing Corsica's 2A by 19 and 2B by 18.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._arrow import fixed_width_strings
from ._errors import InputError

__all__ = ["nir_key", "format_nir", "CORSICA_NONE", "CORSICA_2A", "CORSICA_2B"]

CORSICA_NONE = 0
CORSICA_2A = 1
CORSICA_2B = 2


def nir_key(body: np.ndarray) -> np.ndarray:
    """Key of each 13-digit numeric body (Corsica already replaced by 19/18)."""
    body = np.asarray(body)
    if body.dtype.kind not in "iu":
        raise InputError(f"nir_key: body must be an integer array, got dtype {body.dtype}")
    if len(body) and (body.min() < 0 or body.max() >= 10**13):
        raise InputError("nir_key: every body must be a number of at most 13 digits")
    return (97 - body.astype(np.int64) % 97).astype(np.int8)


@njit(nogil=True, cache=True)
def _format_nir(body, corsica, key, out):
    # Writes 15 bytes per row; rows without key get their last two bytes trimmed by the
    # caller (they are written as a 13-byte value through the offsets).
    for i in range(body.shape[0]):
        b = body[i]
        base = i * 15
        for p in range(12, -1, -1):
            out[base + p] = 48 + b % 10
            b //= 10
        c = corsica[i]
        if c != 0:
            out[base + 5] = 50  # '2'
            out[base + 6] = 65 if c == 1 else 66  # 'A' / 'B'
        k = key[i]
        out[base + 13] = 48 + k // 10
        out[base + 14] = 48 + k % 10


@njit(nogil=True, cache=True)
def _offsets_with_optional_key(with_key, offsets):
    pos = 0
    offsets[0] = 0
    for i in range(with_key.shape[0]):
        pos += 15 if with_key[i] else 13
        offsets[i + 1] = pos


@njit(nogil=True, cache=True)
def _compact(data, with_key, out):
    o = 0
    for i in range(with_key.shape[0]):
        n = 15 if with_key[i] else 13
        for p in range(n):
            out[o + p] = data[i * 15 + p]
        o += n


def format_nir(body, corsica, key, *, with_key=None, valid=None):
    """Format NIR strings from a numeric body, a Corsica flag (0, 1=2A, 2=2B) and a key.

    ``with_key`` (bool array) drops the key from rows where it is False (13-character
    NIRs, as some declarations carry them); ``valid`` marks rows that are null.
    """
    body = np.ascontiguousarray(body, dtype=np.int64)
    corsica = np.ascontiguousarray(corsica, dtype=np.int8)
    key = np.ascontiguousarray(key, dtype=np.int8)
    n = len(body)
    if len(corsica) != n or len(key) != n:
        raise InputError(f"format_nir: arrays differ in length ({n}, {len(corsica)}, {len(key)})")
    out = np.empty(n * 15, dtype=np.uint8)
    _format_nir(body, corsica, key, out)
    if with_key is None or bool(np.all(with_key)):
        return fixed_width_strings(out, 15, valid)
    from ._arrow import string_array_from_buffers

    with_key = np.ascontiguousarray(with_key, dtype=np.bool_)
    offsets = np.empty(n + 1, dtype=np.int64)
    _offsets_with_optional_key(with_key, offsets)
    data = np.empty(offsets[-1], dtype=np.uint8)
    _compact(out, with_key, data)
    return string_array_from_buffers(offsets.astype(np.int32) if offsets[-1] < 2**31 else offsets, data, valid)


# ---------------------------------------------------------------------------------------
# NIR checks over Arrow string buffers

NIR_VALID = 0
NIR_VALID_TEMPORARY = 1
NIR_MISSING = 2
NIR_BAD_KEY = 3
NIR_BAD_FORMAT = 4
NIR_STATUS = ("valid", "valid_temporary", "missing", "bad_key", "bad_format")

# Department codes as small integers: 1-95 metropolitan (20 = Corsica before 1976),
# 201 = 2A, 202 = 2B, 971-978 / 984-988 overseas, 99 = born abroad.
DEPT_2A = 201
DEPT_2B = 202


@njit(nogil=True, cache=True, inline="always")
def _digit(c):
    return 48 <= c <= 57


@njit(nogil=True, cache=True)
def _check_nir(offsets, data, valid, status, key_computed, sex, yy, month, dept, place, out):
    """One pass per value: clean (drop spaces, dots, dashes, tabs; upper-case a/b), check, write
    the 15-character NIR (key computed when only 13 characters were given) into ``out``.

    Rules (see ../shared/reference): sex digit 1/2 permanent, 3/4/7/8 temporary; month
    01-12, 20-42 or 50-99; department 01-95, 2A/2B, 97x (971-978) and 98x (984-988) with a
    2-digit commune, 99 with a 3-digit country code (>= 100); order 001-999; key 01-97
    equal to 97 - (n mod 97) with 2A read as 19 and 2B as 18. ``out`` is only written for
    usable values (the caller marks the others null).
    """
    buf = np.empty(16, np.uint8)
    for i in range(offsets.shape[0] - 1):
        sex[i] = 0
        yy[i] = -1
        month[i] = 0
        dept[i] = 0
        place[i] = 0
        key_computed[i] = False
        if not valid[i]:
            status[i] = NIR_MISSING
            continue
        a = offsets[i]
        b = offsets[i + 1]
        n = 0
        if b - a == 15:  # the common case: 15 characters, nothing to clean
            for j in range(15):
                buf[j] = data[a + j]
            n = 15
            if buf[6] == 97 or buf[6] == 98:
                buf[6] -= 32
            for j in range(15):
                c = buf[j]
                if c == 32 or c == 46 or c == 45 or c == 9:
                    n = -1  # has separators after all: take the slow path
                    break
        else:
            n = -1
        if n < 0:
            n = 0
            for j in range(a, b):
                c = data[j]
                if c == 32 or c == 46 or c == 45 or c == 9:
                    continue
                if c == 97 or c == 98:
                    c -= 32
                if n < 16:
                    buf[n] = c
                n += 1
                if n > 15:
                    break
        if n == 0:
            status[i] = NIR_MISSING
            continue
        if n != 13 and n != 15:
            status[i] = NIR_BAD_FORMAT
            continue
        corsica = 0
        if buf[5] == 50 and buf[6] == 65:
            corsica = 1
        elif buf[5] == 50 and buf[6] == 66:
            corsica = 2
        ok = True
        for p in range(n):
            if not _digit(buf[p]) and not ((p == 6) and corsica != 0):
                ok = False
                break
        if not ok:
            status[i] = NIR_BAD_FORMAT
            continue
        s = buf[0] - 48
        mm = (buf[3] - 48) * 10 + (buf[4] - 48)
        d2 = 0 if corsica else (buf[5] - 48) * 10 + (buf[6] - 48)
        d3 = buf[7] - 48
        commune3 = d3 * 100 + (buf[8] - 48) * 10 + (buf[9] - 48)
        order = (buf[10] - 48) * 100 + (buf[11] - 48) * 10 + (buf[12] - 48)
        if not (s == 1 or s == 2 or s == 3 or s == 4 or s == 7 or s == 8):
            ok = False
        elif not ((1 <= mm <= 12) or (20 <= mm <= 42) or (50 <= mm <= 99)):
            ok = False
        elif order == 0:
            ok = False
        dcode = 0
        pcode = commune3
        if corsica == 1:
            dcode = DEPT_2A
        elif corsica == 2:
            dcode = DEPT_2B
        elif d2 == 97:
            ok = ok and 1 <= d3 <= 8
            dcode = 970 + d3
            pcode = commune3 - d3 * 100
        elif d2 == 98:
            ok = ok and 4 <= d3 <= 8
            dcode = 980 + d3
            pcode = commune3 - d3 * 100
        elif d2 == 99:
            ok = ok and commune3 >= 100
            dcode = 99
        elif 1 <= d2 <= 95:
            dcode = d2
        else:
            ok = False
        if not ok:
            status[i] = NIR_BAD_FORMAT
            continue
        # n mod 97 in two halves (the 13-digit body fits an int64 anyway)
        hi = (buf[0] - 48) * 10000 + (buf[1] - 48) * 1000 + (buf[2] - 48) * 100 + (buf[3] - 48) * 10 + (buf[4] - 48)
        if corsica:
            dd = 19 if corsica == 1 else 18
        else:
            dd = d2
        lo = commune3 * 1000 + order  # 6 digits
        body = (hi * 100 + dd) * 1000000 + lo
        expected = 97 - body % 97
        sex[i] = s
        yy[i] = (buf[1] - 48) * 10 + (buf[2] - 48)
        month[i] = mm if mm <= 12 else 0
        dept[i] = dcode
        place[i] = pcode
        if n == 15:
            k = (buf[13] - 48) * 10 + (buf[14] - 48)
            if k != expected:
                status[i] = NIR_BAD_KEY  # derived fields stay filled: useful for blocking
                continue
        else:
            key_computed[i] = True
        base = i * 15
        for p in range(13):
            out[base + p] = buf[p]
        out[base + 13] = 48 + expected // 10
        out[base + 14] = 48 + expected % 10
        status[i] = NIR_VALID if (s == 1 or s == 2) else NIR_VALID_TEMPORARY


def check_nir(values) -> dict:
    """Check every NIR of an Arrow string array (or chunked array, or Python list).

    Returns numpy arrays: ``status`` (int8, index into NIR_STATUS), ``key_computed`` (bool,
    a 13-character NIR whose key nirlink computed), ``sex`` (the NIR's sex digit, 0 when
    unusable), ``yy`` (two-digit birth year, -1 when unusable), ``month`` (1-12, 0 when
    unknown or unusable), ``dept`` (see DEPT_*), ``place`` (commune or country code), and
    ``nir``: an Arrow string array of the 15-character NIR (the key completed when
    only 13 characters were given), null unless the status is valid or valid_temporary.
    Derived fields are also filled for bad_key values (their body is well formed).
    """
    import pyarrow as pa

    from ._arrow import fixed_width_strings, string_buffers

    if isinstance(values, list):
        values = pa.array(values, pa.string())
    offsets, data, valid = string_buffers(values)
    n = len(offsets) - 1
    status = np.empty(n, np.int8)
    key_computed = np.empty(n, np.bool_)
    sex = np.empty(n, np.int8)
    yy = np.empty(n, np.int8)
    month = np.empty(n, np.int8)
    dept = np.empty(n, np.int16)
    place = np.empty(n, np.int16)
    out = np.zeros(n * 15, np.uint8)  # zeroed: bytes under null values stay deterministic
    _check_nir(offsets, data, valid, status, key_computed, sex, yy, month, dept, place, out)
    usable = status <= NIR_VALID_TEMPORARY
    nir = fixed_width_strings(out, 15, usable)
    return {"status": status, "key_computed": key_computed, "sex": sex, "yy": yy, "month": month, "dept": dept,
            "place": place, "nir": nir}
