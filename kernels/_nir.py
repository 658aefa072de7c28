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
