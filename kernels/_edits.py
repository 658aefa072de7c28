"""Pairs of short ASCII strings that agree on a segment and are within two edits.

The exact u count of the declared NIR (linkage/_exact_u.py) enumerates the pairs of register
NIR bodies that agree on one of the body's segments and keeps those within two edits
(Levenshtein) or sharing their first characters. DuckDB computed the edit distance of every
pair agreeing on a segment (2.3M pairs for a 5,000-row sample at 200,000 persons, 1.1 of the
count's 1.45 s); here each segment's pairs come from a sort of its keys and the distance is
a banded Levenshtein that stops as soon as the band exceeds two edits (most pairs: within the
first few characters). Strings are Arrow string buffers (offsets, bytes); a segment is
``substr(s, p, w)`` with SQL's 1-based ``p``, a string shorter than ``p + w - 1`` giving its
shorter substring (packed into a key with its length, so two substrings are equal exactly
when their keys are). ASCII only: the caller checks (DuckDB counts characters, this counts
bytes).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["segment_keys", "near_pairs", "within_edits"]

MAX_SEGMENT = 7  # bytes of a segment packed into a 64-bit key with its length


@njit(nogil=True, cache=True)
def _keys(data, offsets, p, w, out):
    for i in range(out.shape[0]):
        start = offsets[i] + p - 1
        stop = min(offsets[i + 1], start + w)
        key = np.uint64(0)
        n = 0
        for j in range(start, stop):
            key |= np.uint64(data[j]) << np.uint64(8 * n)
            n += 1
        out[i] = key | (np.uint64(n) << np.uint64(56))


def segment_keys(data: np.ndarray, offsets: np.ndarray, p: int, w: int) -> np.ndarray:
    """One uint64 key per string for ``substr(s, p, w)`` (1-based ``p``, ``1 <= w <= 7``)."""
    if not 1 <= w <= MAX_SEGMENT or p < 1:
        raise ValueError(f"a segment is 1 to {MAX_SEGMENT} characters from position 1 on, not ({p}, {w})")
    out = np.empty(len(offsets) - 1, dtype=np.uint64)
    _keys(data, np.asarray(offsets, dtype=np.int64), p, w, out)
    return out


@njit(nogil=True, cache=True)
def _within(data_a, a0, a1, data_b, b0, b1, k, prev, cur):
    """Levenshtein distance of a[a0:a1] and b[b0:b1] at most ``k``, on the band of the DP matrix
    within ``k`` of its diagonal, stopping when a whole row of the band exceeds k. ``prev`` and
    ``cur``: two work rows of at least len(b) + 1 (allocated once by the caller)."""
    n, m = a1 - a0, b1 - b0
    if abs(n - m) > k:
        return False
    big = k + 1
    for j in range(m + 1):
        prev[j] = j if j <= k else big
    for i in range(1, n + 1):
        lo, hi = max(1, i - k), min(m, i + k)
        cur[0] = i if i <= k else big
        cur[lo - 1] = big if lo > 1 else cur[0]  # the cell left of the band (read as cur[j - 1])
        best = cur[0] if lo == 1 else big
        ca = data_a[a0 + i - 1]
        for j in range(lo, hi + 1):
            cost = 0 if ca == data_b[b0 + j - 1] else 1
            v = prev[j - 1] + cost
            if prev[j] + 1 < v:
                v = prev[j] + 1
            if cur[j - 1] + 1 < v:
                v = cur[j - 1] + 1
            if v > big:
                v = big
            cur[j] = v
            if v < best:
                best = v
        if hi < m:  # the cell right of the band (read as prev[j] by the next row)
            cur[hi + 1] = big
        if best > k:
            return False
        prev, cur = cur, prev
    return prev[m] <= k


def within_edits(a: str, b: str, k: int = 2) -> bool:
    """Levenshtein(a, b) <= k for two ASCII strings (the kernel on Python strings, for tests)."""
    da, db = np.frombuffer(a.encode("ascii"), np.uint8), np.frombuffer(b.encode("ascii"), np.uint8)
    return bool(_within(da, 0, len(da), db, 0, len(db), k, np.empty(len(db) + 1, np.int64),
                        np.empty(len(db) + 1, np.int64)))


@njit(nogil=True, cache=True)
def _histograms(data, offsets):
    """Per string, its bytes counted in 16 bins (the low 4 bits): one edit changes the L1
    distance of two strings' histograms by at most 2 (merged bins only lower it). A bin
    counts up to 255: longer strings are not for this kernel (near_pairs checks)."""
    out = np.zeros((offsets.shape[0] - 1, 16), dtype=np.uint8)
    for i in range(offsets.shape[0] - 1):
        for j in range(offsets[i], offsets[i + 1]):
            out[i, data[j] & 15] += 1
    return out


@njit(nogil=True, cache=True)
def _near(s, a_keys, a_ids, a_prefix, a_hist, a_data, a_off, b_keys, b_ids, b_prefix, b_hist, b_rows, b_data, b_off,
          k, prev, cur, found, out_a, out_b):
    """The pairs of segment ``s``: (a row, b row) agreeing on segment ``s`` and on no earlier
    one, of distinct ids, sharing the prefix key or within ``k`` edits. The b arrays but the
    bytes are in the order of b's sorted segment-``s`` keys (``b_rows``: the rows they are), so
    that a row's candidates are read one after the other. Written into out_a / out_b from
    ``found`` on, up to their length; returns the count so far. ``prev``, ``cur``: _within's
    work rows."""
    keys = b_keys[s]
    for i in range(a_keys.shape[1]):
        key = a_keys[s, i]
        lo = np.searchsorted(keys, key, side="left")
        hi = np.searchsorted(keys, key, side="right")
        for t in range(lo, hi):
            if a_ids[i] == b_ids[t]:
                continue
            earlier = False
            for e in range(s):
                if a_keys[e, i] == b_keys[e, t]:
                    earlier = True
                    break
            if earlier:
                continue
            if a_prefix[i] == b_prefix[t]:
                near = True
            else:  # each edit moves at most 2 counts of the histogram: a cheap test first
                l1 = 0
                for c in range(16):
                    l1 += abs(np.int32(a_hist[i, c]) - np.int32(b_hist[t, c]))
                j = b_rows[t]
                near = l1 <= 2 * k and _within(a_data, a_off[i], a_off[i + 1], b_data, b_off[j], b_off[j + 1], k,
                                               prev, cur)
            if near:
                if found < out_a.shape[0]:
                    out_a[found] = i
                    out_b[found] = b_rows[t]
                found += 1
    return found


def near_pairs(a: tuple[np.ndarray, np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray, np.ndarray],
               segments: tuple[tuple[int, int], ...], prefix: int, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (into ``a``, into ``b``) of the pairs of distinct ids that agree on one of
    ``segments`` ((p, w) as SQL's substr) and share their first ``prefix`` characters or are
    within ``k`` edits, each pair once, ordered by the first segment they agree on, then by
    ``a`` row, then by ``b``'s sorted key order. ``a`` and ``b``: (ids int64, ASCII bytes uint8,
    Arrow offsets) of a string column."""
    a_ids, a_data, a_off = a
    b_ids, b_data, b_off = b
    a_off, b_off = np.asarray(a_off, dtype=np.int64), np.asarray(b_off, dtype=np.int64)
    a_ids, b_ids = np.ascontiguousarray(a_ids, np.int64), np.ascontiguousarray(b_ids, np.int64)
    if not segments:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    longest = int(max(np.diff(a_off).max(initial=0), np.diff(b_off).max(initial=0)))
    if longest > 255:
        raise ValueError("near_pairs compares strings of at most 255 bytes")
    prev, cur = np.empty(longest + 1, np.int64), np.empty(longest + 1, np.int64)  # _within's work rows
    a_keys = np.stack([segment_keys(a_data, a_off, p, w) for p, w in segments])
    b_keys = np.stack([segment_keys(b_data, b_off, p, w) for p, w in segments])
    a_prefix, b_prefix = segment_keys(a_data, a_off, 1, prefix), segment_keys(b_data, b_off, 1, prefix)
    a_hist, b_hist = _histograms(a_data, a_off), _histograms(b_data, b_off)
    sorted_b = []
    for s in range(len(segments)):  # b's arrays in the order of its segment-s keys
        rows = np.argsort(b_keys[s], kind="stable")
        sorted_b.append((np.ascontiguousarray(b_keys[:, rows]), b_ids[rows], b_prefix[rows], b_hist[rows], rows))
    size = 1 << 16
    while True:
        out_a, out_b = np.empty(size, np.int64), np.empty(size, np.int64)
        found = 0
        for s, (keys, ids, pre, hist, rows) in enumerate(sorted_b):
            found = _near(s, a_keys, a_ids, a_prefix, a_hist, a_data, a_off, keys, ids, pre, hist, rows, b_data,
                          b_off, k, prev, cur, found, out_a, out_b)
        if found <= size:
            return out_a[:found], out_b[:found]
        size = found
