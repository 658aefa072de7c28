"""Identity normalisation kernels over UTF-8 Arrow buffers.

`normalize_names`: upper case, accents folded (Latin-1 and Latin Extended-A/B letters to
their ASCII base, ß -> SS, Æ -> AE, Œ -> OE), combining marks dropped, punctuation and
runs of spaces collapsed to one space, trimmed. Hyphens either become spaces (last names:
DUPONT-MARTIN ~ DUPONT MARTIN) or are kept, glued (first names: JEAN - PIERRE ->
JEAN-PIERRE). Letters with no ASCII base and characters of other scripts are kept as they
are (beyond U+024F only general punctuation and typographic quotes, dashes and spaces are
separators). Control characters (NUL...)
and invalid UTF-8 are reported per value in ``flags`` so ingest can reject those rows.

`text_checks` finds, in one pass over the bytes, the values with a control character
(U+0000-U+0008, U+000B, U+000C, U+000E-U+001F, U+007F: tab and line breaks are allowed)
and those longer than a number of code points.

`squeeze` removes spaces (DE LA FONTAINE and DELAFONTAINE compare equal), `first_token`
keeps the first of several space-separated first names.
"""

from __future__ import annotations

import unicodedata

import numpy as np
from numba import njit

from ._arrow import byte_classes, string_array_from_buffers, string_buffers

__all__ = ["normalize_names", "squeeze", "first_token", "text_checks", "blank_values", "FLAG_CONTROL", "FLAG_BAD_UTF8"]

FLAG_CONTROL = 1
FLAG_BAD_UTF8 = 2

_TABLE_END = 0x0250
_SPECIAL = {"ß": "SS", "ẞ": "SS", "Æ": "AE", "æ": "AE", "Œ": "OE", "œ": "OE", "Ø": "O", "ø": "O", "Đ": "D",
            "đ": "D", "Ł": "L", "ł": "L", "Þ": "TH", "þ": "TH", "Ð": "D", "ð": "D", "Ħ": "H", "ħ": "H",
            "ı": "I", "Ŋ": "N", "ŋ": "N", "Ŧ": "T", "ŧ": "T"}


def _build_table() -> np.ndarray:
    """Code point -> up to two ASCII bytes for U+0000..U+024F.

    (0, 0): keep the character as it is (a letter with no ASCII base); (32, 0): a separator
    (punctuation and symbols such as the multiplication sign).
    """
    table = np.zeros((_TABLE_END, 2), np.uint8)
    for cp in range(0xA0, _TABLE_END):
        ch = chr(cp)
        rep = _SPECIAL.get(ch)
        if rep is None:
            if not ch.isalpha():
                table[cp, 0] = 32
                continue
            base = "".join(c for c in unicodedata.normalize("NFKD", ch) if c.isascii() and c.isalpha())
            rep = base.upper()
        if rep and len(rep) <= 2 and rep.isascii():
            for k, c in enumerate(rep):
                table[cp, k] = ord(c)
    return table


_TABLE = _build_table()
# Typographic apostrophes, dashes and spaces that count as separators.
_SEPARATORS = np.array([0x00A0, 0x2010, 0x2011, 0x2012, 0x2013, 0x2014, 0x2015, 0x2018, 0x2019, 0x201A, 0x201B,
                        0x201C, 0x201D, 0x00B4, 0x02BC, 0x2032, 0x202F, 0x2007, 0x2009, 0x00AB, 0x00BB, 0x00B7],
                       np.int64)


@njit(nogil=True, cache=True)
def _is_sep_cp(cp, separators):
    for s in separators:
        if cp == s:
            return True
    return False


@njit(nogil=True, cache=True)
def _normalize(offsets, data, valid, keep_hyphen, table, separators, out_offsets, out, flags):
    o = 0
    out_offsets[0] = 0
    for i in range(offsets.shape[0] - 1):
        flags[i] = 0
        start_o = o
        pending_space = False
        pending_hyphen = False
        if valid[i]:
            j = offsets[i]
            end = offsets[i + 1]
            while j < end:
                b0 = data[j]
                cp = -1
                nbytes = 1
                if b0 < 0x80:
                    cp = b0
                elif (b0 & 0xE0) == 0xC0 and j + 1 < end and (data[j + 1] & 0xC0) == 0x80:
                    cp = ((b0 & 0x1F) << 6) | (data[j + 1] & 0x3F)
                    nbytes = 2
                    if cp < 0x80:
                        cp = -1
                elif (b0 & 0xF0) == 0xE0 and j + 2 < end and (data[j + 1] & 0xC0) == 0x80 and (data[j + 2] & 0xC0) == 0x80:
                    cp = ((b0 & 0x0F) << 12) | ((data[j + 1] & 0x3F) << 6) | (data[j + 2] & 0x3F)
                    nbytes = 3
                    if cp < 0x800:
                        cp = -1
                elif (b0 & 0xF8) == 0xF0 and j + 3 < end and (data[j + 1] & 0xC0) == 0x80 and \
                        (data[j + 2] & 0xC0) == 0x80 and (data[j + 3] & 0xC0) == 0x80:
                    cp = ((b0 & 0x07) << 18) | ((data[j + 1] & 0x3F) << 12) | ((data[j + 2] & 0x3F) << 6) | \
                        (data[j + 3] & 0x3F)
                    nbytes = 4
                    if cp < 0x10000:
                        cp = -1
                if cp < 0:
                    flags[i] |= 2
                    j += 1
                    continue
                # classify
                emit0 = 0
                emit1 = 0
                copy_raw = False
                sep = False
                hyphen = False
                if cp < 0x80:
                    if 97 <= cp <= 122:
                        emit0 = cp - 32
                    elif (65 <= cp <= 90) or (48 <= cp <= 57):
                        emit0 = cp
                    elif cp < 32 or cp == 127:
                        flags[i] |= 1
                        sep = True
                    elif cp == 45:
                        hyphen = True
                    else:
                        sep = True
                elif cp < 0xA0:
                    flags[i] |= 1  # C1 control characters
                    sep = True
                elif cp < table.shape[0]:
                    if table[cp, 0] == 32:
                        sep = True
                    elif table[cp, 0] != 0:
                        emit0 = table[cp, 0]
                        emit1 = table[cp, 1]
                    else:
                        copy_raw = True
                elif 0x0300 <= cp <= 0x036F:
                    j += nbytes  # combining mark: dropped
                    continue
                elif 0x2010 <= cp <= 0x2013:
                    hyphen = True  # typographic hyphens and en dash count as '-'
                elif _is_sep_cp(cp, separators) or (0x2000 <= cp <= 0x206F):
                    sep = True
                else:
                    copy_raw = True
                if hyphen and not keep_hyphen:
                    sep = True
                    hyphen = False
                if sep:
                    if o > start_o:
                        pending_space = True
                    j += nbytes
                    continue
                if hyphen:
                    if o > start_o:
                        pending_hyphen = True
                    j += nbytes
                    continue
                if pending_hyphen:
                    out[o] = 45
                    o += 1
                elif pending_space:
                    out[o] = 32
                    o += 1
                pending_space = False
                pending_hyphen = False
                if copy_raw:
                    for k in range(nbytes):
                        out[o] = data[j + k]
                        o += 1
                else:
                    out[o] = emit0
                    o += 1
                    if emit1 != 0:
                        out[o] = emit1
                        o += 1
                j += nbytes
        out_offsets[i + 1] = o


@njit(nogil=True, cache=True)
def _squeeze(offsets, data, out_offsets, out):
    o = 0
    out_offsets[0] = 0
    for i in range(offsets.shape[0] - 1):
        for j in range(offsets[i], offsets[i + 1]):
            if data[j] != 32:
                out[o] = data[j]
                o += 1
        out_offsets[i + 1] = o


@njit(nogil=True, cache=True)
def _first_token(offsets, data, out_offsets, out):
    o = 0
    out_offsets[0] = 0
    for i in range(offsets.shape[0] - 1):
        for j in range(offsets[i], offsets[i + 1]):
            if data[j] == 32:
                break
            out[o] = data[j]
            o += 1
        out_offsets[i + 1] = o


def _offsets_like(offsets):
    return np.empty(len(offsets), dtype=np.int64 if offsets.dtype == np.int64 else np.int32)


def normalize_names(values, *, keep_hyphen: bool = False):
    """Normalised copies of a string array; returns ``(array, flags)`` (flags: FLAG_* bits per value).

    Nulls stay null; a value that normalises to nothing becomes the empty string.
    """
    offsets, data, valid = string_buffers(values)
    n = len(offsets) - 1
    out_offsets = _offsets_like(offsets)
    out = np.empty(max(len(data), 1), np.uint8)
    flags = np.empty(n, np.uint8)
    _normalize(offsets, data, valid, bool(keep_hyphen), _TABLE, _SEPARATORS, out_offsets, out, flags)
    return string_array_from_buffers(out_offsets, out[: out_offsets[-1]], valid), flags


def squeeze(values):
    """Remove every space (for comparing names written with or without them)."""
    offsets, data, valid = string_buffers(values)
    out_offsets = _offsets_like(offsets)
    out = np.empty(max(len(data), 1), np.uint8)
    _squeeze(offsets, data, out_offsets, out)
    return string_array_from_buffers(out_offsets, out[: out_offsets[-1]], valid)


def first_token(values):
    """The part before the first space (the first of several first names)."""
    offsets, data, valid = string_buffers(values)
    out_offsets = _offsets_like(offsets)
    out = np.empty(max(len(data), 1), np.uint8)
    _first_token(offsets, data, out_offsets, out)
    return string_array_from_buffers(out_offsets, out[: out_offsets[-1]], valid)


@njit(nogil=True, cache=True)
def _text_checks(offsets, data, valid, max_length, control, too_long):
    for i in range(offsets.shape[0] - 1):
        ctl = False
        points = 0
        if valid[i]:
            for j in range(offsets[i], offsets[i + 1]):
                b = data[j]
                if (b & 0xC0) != 0x80:  # not a continuation byte: a new code point
                    points += 1
                if b < 0x20:
                    if b != 9 and b != 10 and b != 13:
                        ctl = True
                elif b == 0x7F:
                    ctl = True
        control[i] = ctl
        too_long[i] = points > max_length


def text_checks(values, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """``(control, too_long)`` per value of a UTF-8 string array: a control character other
    than tab, line feed and carriage return; more than ``max_length`` code points. Nulls are
    neither (the same answers as the regular expression ``[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]``
    and ``utf8_length > max_length``, without a pass per check)."""
    offsets, data, valid = string_buffers(values)
    n = len(offsets) - 1
    high, ctl = byte_classes(offsets, data)
    if not ctl:  # no control character anywhere; a value has no more code points than bytes
        long = (np.diff(offsets) > max_length) & valid
        if not high or not long.any():
            return np.zeros(n, np.bool_), long
    control = np.empty(n, np.bool_)
    too_long = np.empty(n, np.bool_)
    _text_checks(offsets, data, valid, int(max_length), control, too_long)
    return control, too_long


@njit(nogil=True, cache=True)
def _is_space(cp):
    """Unicode White_Space as pyarrow's utf8_trim_whitespace trims it (and str.isspace)."""
    if cp < 0x80:
        return (9 <= cp <= 13) or (28 <= cp <= 32)
    return (cp == 0x85 or cp == 0xA0 or cp == 0x1680 or 0x2000 <= cp <= 0x200A or cp == 0x2028 or cp == 0x2029
            or cp == 0x202F or cp == 0x205F or cp == 0x3000)


@njit(nogil=True, cache=True)
def _blank_values(offsets, data, valid, out):
    for i in range(offsets.shape[0] - 1):
        blank = True
        if valid[i]:
            j = offsets[i]
            end = offsets[i + 1]
            while j < end:
                b = np.int64(data[j])
                if b < 0x80:
                    cp, k = b, 1
                elif (b & 0xE0) == 0xC0 and j + 1 < end:
                    cp, k = ((b & 0x1F) << 6) | (np.int64(data[j + 1]) & 0x3F), 2
                elif (b & 0xF0) == 0xE0 and j + 2 < end:
                    cp, k = ((b & 0x0F) << 12) | ((np.int64(data[j + 1]) & 0x3F) << 6) | (np.int64(data[j + 2]) & 0x3F), 3
                else:  # 4-byte characters (none is a space) and stray bytes
                    cp, k = -1, 1
                if cp < 0 or not _is_space(cp):
                    blank = False
                    break
                j += k
        out[i] = blank


def blank_values(values) -> np.ndarray:
    """True where a UTF-8 string value is null or only white space: what
    ``fill_null(utf8_trim_whitespace(v) == "", True)`` gives, in one pass that stops at the
    first other character (most values: their first byte)."""
    offsets, data, valid = string_buffers(values)
    out = np.empty(len(offsets) - 1, np.bool_)
    _blank_values(offsets, data, valid, out)
    return out
