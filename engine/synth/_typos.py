"""The noise model's name errors in one Numba pass over UTF-8 buffers: accents lost, typos,
last and first names swapped, case and spacing changes (engine/synth/_noise.py draws who
gets which, and the uniforms that choose how).

The rules are those of the Python functions kept in _noise.py (`_typo`, `_case_spacing`,
`strip_accents`), which the tests use as the reference: for the same uniforms the kernel
gives the same strings, so moving the loop here changed no byte of the output. Per version
the Python loop cost ~2 us (slicing and joining str objects, three calls); the kernel decodes
the two names into code points, edits them in place and encodes them once.

Case mapping and accent stripping are tables over the code points below U+0250 (Latin-1 and
Latin Extended-A/B, where the names' vocabularies live: the highest is Ÿ, U+0178), built
from Python's own `str.lower`, `str.title` and NFKD so they cannot disagree with it; the
wrapper refuses a name with a code point beyond them.
"""

from __future__ import annotations

import unicodedata

import numpy as np
import pyarrow as pa
from numba import njit

from nirlink.kernels import InputError
from nirlink.kernels._arrow import string_array_from_buffers, string_buffers

__all__ = ["noisy_names", "TYPO_LAST", "TYPO_FIRST", "SWAPPED", "CASING", "STRIP_ACCENTS"]

TYPO_LAST, TYPO_FIRST, SWAPPED, CASING, STRIP_ACCENTS = 1, 2, 4, 8, 16
ALPHABET = "ABCDEEEFGHIIJKLLMNNOPRRSSTTUVZ"
KEYBOARD = {  # AZERTY neighbours for substitutions
    "A": "ZQ", "Z": "AES", "E": "ZRD", "R": "ETF", "T": "RYG", "Y": "TUH", "U": "YIJ", "I": "UOK", "O": "IPL",
    "P": "OM", "Q": "ASW", "S": "QDZ", "D": "SFE", "F": "DGR", "G": "FHT", "H": "GJY", "J": "HKU", "K": "JLI",
    "L": "KMO", "M": "LP", "W": "XQ", "X": "WC", "C": "XV", "V": "CB", "B": "VN", "N": "BM",
}
_TABLE_END = 0x0250
_STRIP_MAX = 2  # code points an accent-stripped character may become


def _strip(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _tables():
    """Per code point: lower, title, cased, its accent-stripped form (length and code points),
    its substitution pool (offset, length into ``pools``) and whether all of these are
    single code points below the table's end (``supported``)."""
    lower = np.arange(_TABLE_END, dtype=np.int32)
    title = np.arange(_TABLE_END, dtype=np.int32)
    cased = np.zeros(_TABLE_END, np.bool_)
    strip_len = np.zeros(_TABLE_END, np.int32)
    strip_cp = np.zeros((_TABLE_END, _STRIP_MAX), np.int32)
    supported = np.zeros(_TABLE_END, np.bool_)
    for cp in range(_TABLE_END):
        c = chr(cp)
        lo, ti, st = c.lower(), c.title(), _strip(c)
        ok = len(lo) == 1 and len(ti) == 1 and len(st) <= _STRIP_MAX
        ok = ok and all(ord(x) < _TABLE_END for x in lo + ti + st)
        supported[cp] = ok
        if not ok:
            continue
        lower[cp], title[cp] = ord(lo), ord(ti)
        cased[cp] = c.isupper() or c.islower() or c.istitle()
        strip_len[cp] = len(st)
        strip_cp[cp, :len(st)] = [ord(x) for x in st]
    pools = ALPHABET + "".join(KEYBOARD.values())
    pool_at = np.zeros(_TABLE_END, np.int32)
    pool_len = np.full(_TABLE_END, len(ALPHABET), np.int32)
    at = len(ALPHABET)
    for c, pool in KEYBOARD.items():
        pool_at[ord(c)], pool_len[ord(c)] = at, len(pool)
        at += len(pool)
    return (lower, title, cased, strip_len, strip_cp, np.array([ord(c) for c in pools], np.int32), pool_at, pool_len,
            supported)


_TABLES = _tables()
_SUPPORTED = _TABLES[-1]


@njit(nogil=True, cache=True, inline="always")
def _decode(data, a, b, out):
    """The code points of UTF-8 bytes data[a:b] into ``out``; returns their number."""
    n = 0
    i = a
    while i < b:
        c = data[i]
        if c < 0x80:
            cp = c
            i += 1
        elif c < 0xE0:
            cp = ((c & 0x1F) << 6) | (data[i + 1] & 0x3F)
            i += 2
        elif c < 0xF0:
            cp = ((c & 0x0F) << 12) | ((data[i + 1] & 0x3F) << 6) | (data[i + 2] & 0x3F)
            i += 3
        else:
            cp = ((c & 0x07) << 18) | ((data[i + 1] & 0x3F) << 12) | ((data[i + 2] & 0x3F) << 6) | (data[i + 3] & 0x3F)
            i += 4
        out[n] = cp
        n += 1
    return n


@njit(nogil=True, cache=True, inline="always")
def _encode(cps, n, data, at):
    """UTF-8 of the code points cps[:n] (all below U+0800) written at data[at:]; returns the end."""
    for k in range(n):
        cp = cps[k]
        if cp < 0x80:
            data[at] = cp
            at += 1
        else:
            data[at] = 0xC0 | (cp >> 6)
            data[at + 1] = 0x80 | (cp & 0x3F)
            at += 2
    return at


@njit(nogil=True, cache=True, inline="always")
def _typo(u0, u1, u2, s, n, alphabet, pools, pool_at, pool_len):
    """One typo in s[:n] (in place, s has room for one more); returns the new length."""
    if n < 2:
        s[n] = 69  # "E"
        return n + 1
    op = int(u0 * 4)
    i = int(u1 * n)
    if op == 0:  # insert
        for k in range(n, i, -1):
            s[k] = s[k - 1]
        s[i] = alphabet[int(u2 * alphabet.shape[0])]
        return n + 1
    if op == 1:  # delete
        for k in range(i, n - 1):
            s[k] = s[k + 1]
        return n - 1
    if op == 2:  # substitute, by a keyboard neighbour when there is one
        c = s[i]
        at = pool_at[c] if c < pool_at.shape[0] else 0
        size = pool_len[c] if c < pool_len.shape[0] else alphabet.shape[0]
        s[i] = pools[at + int(u2 * size)]
        return n
    if i > n - 2:  # transpose with the next character
        i = n - 2
    c = s[i]
    s[i] = s[i + 1]
    s[i + 1] = c
    return n


@njit(nogil=True, cache=True, inline="always")
def _case_spacing(u, s, n, tmp, lower, title, cased):
    """A case or spacing change of s[:n] (in place, through ``tmp``); returns the new length."""
    op = int(u * 4)
    if op == 0:
        for k in range(n):
            s[k] = lower[s[k]]
        return n
    if op == 1:  # str.title: a cased character after a cased one is lowered, the others title-cased
        prev = False
        for k in range(n):
            c = s[k]
            s[k] = lower[c] if prev else title[c]
            prev = cased[c]
        return n
    if op == 2:
        spaced = False
        for k in range(n):
            if s[k] == 32 or s[k] == 45:
                spaced = True
                break
        if not spaced:
            for k in range(n, 0, -1):
                s[k] = s[k - 1]
            s[0] = 32
            s[n + 1] = 32
            return n + 2
        # spaces doubled, then the first hyphen surrounded by spaces
        m = 0
        hyphen = False
        for k in range(n):
            c = s[k]
            if c == 32:
                tmp[m] = 32
                tmp[m + 1] = 32
                m += 2
            elif c == 45 and not hyphen:
                tmp[m] = 32
                tmp[m + 1] = 45
                tmp[m + 2] = 32
                m += 3
                hyphen = True
            else:
                tmp[m] = c
                m += 1
        for k in range(m):
            s[k] = tmp[k]
        return m
    s[n] = 46  # "."
    return n + 1


@njit(nogil=True, cache=True)
def _noisy_names(l_off, l_data, f_off, f_data, last_src, first_src, flags, draw_row, u, lower, title, cased,
                 strip_len, strip_cp, alphabet, pools, pool_at, pool_len, width, out_l_off, out_l_data, out_f_off,
                 out_f_data):
    """Per entry t: the last name l[last_src[t]] and first name f[first_src[t]] with the
    errors of flags[t], choices from the uniforms u[draw_row[t]], into the output buffers."""
    a = np.empty(width, np.int32)
    b = np.empty(width, np.int32)
    t_buf = np.empty(width, np.int32)
    la = 0
    fa = 0
    out_l_off[0] = 0
    out_f_off[0] = 0
    for t in range(last_src.shape[0]):
        na = _decode(l_data, l_off[last_src[t]], l_off[last_src[t] + 1], a)
        nb = _decode(f_data, f_off[first_src[t]], f_off[first_src[t] + 1], b)
        fl = flags[t]
        if fl & 16:  # accents lost (first names)
            m = 0
            for k in range(nb):
                c = b[k]
                for j in range(strip_len[c]):
                    t_buf[m] = strip_cp[c, j]
                    m += 1
            for k in range(m):
                b[k] = t_buf[k]
            nb = m
        r = draw_row[t]
        if r >= 0:
            if fl & 1:
                na = _typo(u[r, 0], u[r, 1], u[r, 2], a, na, alphabet, pools, pool_at, pool_len)
            if fl & 2:
                nb = _typo(u[r, 3], u[r, 4], u[r, 5], b, nb, alphabet, pools, pool_at, pool_len)
            if fl & 4:
                a, b = b, a
                na, nb = nb, na
            if fl & 8:
                na = _case_spacing(u[r, 6], a, na, t_buf, lower, title, cased)
                nb = _case_spacing(u[r, 7], b, nb, t_buf, lower, title, cased)
        la = _encode(a, na, out_l_data, la)
        out_l_off[t + 1] = la
        fa = _encode(b, nb, out_f_data, fa)
        out_f_off[t + 1] = fa


def _checked(values: pa.Array, what: str):
    off, data, _ = string_buffers(values)
    if len(data):
        text = data.tobytes().decode("utf-8")
        cps = np.frombuffer(text.encode("utf-32-le"), np.uint32)
        bad = (cps >= _TABLE_END) | ~_SUPPORTED[np.minimum(cps, _TABLE_END - 1)]
        if bad.any():
            raise InputError(f"{what}: character U+{int(cps[np.argmax(bad)]):04X} is outside the noise model's "
                             f"tables (code points below U+{_TABLE_END:04X})")
    return off, data


def noisy_names(last: pa.Array, first: pa.Array, last_src: np.ndarray, first_src: np.ndarray, flags: np.ndarray,
                draw_row: np.ndarray, u: np.ndarray) -> tuple[pa.Array, pa.Array]:
    """Entry t: ``last[last_src[t]]`` and ``first[first_src[t]]`` with the errors of ``flags[t]``
    (TYPO_LAST, TYPO_FIRST, SWAPPED, CASING: choices from the eight uniforms ``u[draw_row[t]]``,
    which must be >= 0 for them; STRIP_ACCENTS: the first name's), as two string arrays. In
    the order of _noise.py's loop: accents, typos, swap, case and spacing."""
    l_off, l_data = _checked(last, "last names")
    f_off, f_data = _checked(first, "first names")
    n = len(last_src)
    last_src = np.ascontiguousarray(last_src, np.int64)
    first_src = np.ascontiguousarray(first_src, np.int64)
    l_len = (l_off[1:] - l_off[:-1]).astype(np.int64)
    f_len = (f_off[1:] - f_off[:-1]).astype(np.int64)
    # a value's code points are at most its bytes; stripping may double them, a typo add one,
    # spacing double the spaces and add two; swapping moves a first name to the last names
    longest = int(max(l_len.max(initial=0), f_len.max(initial=0)))
    width = 2 * (_STRIP_MAX * longest + 1) + 4
    room = 2 * width * n  # UTF-8 bytes: two a code point (all below U+0800)
    out = (np.empty(n + 1, np.int64), np.empty(room, np.uint8), np.empty(n + 1, np.int64), np.empty(room, np.uint8))
    lower, title, cased, strip_len, strip_cp, pools, pool_at, pool_len, _ = _TABLES
    u = np.ascontiguousarray(u, np.float64).reshape(-1, 8) if len(u) else np.zeros((1, 8))
    _noisy_names(l_off, l_data, f_off, f_data, last_src, first_src, np.ascontiguousarray(flags, np.int8),
                 np.ascontiguousarray(draw_row, np.int64), u, lower, title, cased, strip_len, strip_cp, pools[:len(ALPHABET)],
                 pools, pool_at, pool_len, width, *out)
    lo, ld, fo, fd = out
    return (_as_strings(lo, ld[:lo[-1]]), _as_strings(fo, fd[:fo[-1]]))


def _as_strings(offsets: np.ndarray, data: np.ndarray) -> pa.Array:
    if offsets[-1] < 2**31:
        offsets = offsets.astype(np.int32)
        return string_array_from_buffers(offsets, data)
    return string_array_from_buffers(offsets, data).cast(pa.string())
