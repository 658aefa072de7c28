"""Grouping and segmented reductions: the building blocks of per-person aggregation.

Rows are grouped by a dense integer key (a person index, or person x year) with a
counting sort - linear time, stable, no comparison sort - and reduced segment by segment.
A segment is the run of rows ``starts[s] .. starts[s+1]-1`` of the grouped order.

All kernels here are serial on purpose: Dask already runs one task per core, and a Numba
``parallel=True`` kernel inside each of them would oversubscribe the cores (and Numba's
workqueue threading layer is not safe when called from several threads at once). They
release the GIL (``nogil``) so that several Dask threads of one worker run them truly in
parallel. tests/test_segments.py checks both choices.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._errors import InputError

__all__ = ["group_by_key", "segment_sum", "segment_min", "segment_max", "segment_count", "segment_first",
           "segment_last", "segment_topk_mean", "rolling_window_sum", "count_runs", "run_end", "integer_input",
           "grouping_order", "sorted_unique", "KERNELS"]


@njit(nogil=True, cache=True)
def _group(keys, n_keys, starts, order):
    for i in range(keys.shape[0]):
        starts[keys[i] + 1] += 1
    for k in range(n_keys):
        starts[k + 1] += starts[k]
    pos = starts[:-1].copy()
    for i in range(keys.shape[0]):
        k = keys[i]
        order[pos[k]] = i
        pos[k] += 1


def sorted_unique(values) -> np.ndarray:
    """``np.unique(values)`` of a 1-d integer array: its distinct values, sorted. numpy 2.4 (the
    version measured) answers a plain ``np.unique`` of integers from a hash set: ~0.7 us a
    value once they are many and distinct (5.56M signature hashes: 9.0 s), where sorting and
    dropping repeats takes 0.07 s. The link stage's scoring spent 13.8 of its 80 s of CPU
    there at 2M persons (``np.unique`` with ``return_index``/``_inverse``/``_counts`` still sorts).
    For values that mostly repeat, ``kernels._hash.distinct_first`` (a hash table sized for a
    few distinct values per row) is the faster one; on 5.56M distinct hashes it took 1.9 s."""
    values = np.sort(np.asarray(values).ravel())
    if len(values) < 2:
        return values
    keep = np.empty(len(values), bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def group_by_key(keys, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable grouping of rows by ``keys`` in ``[0, n_keys)``: returns ``(order, starts)``.

    ``order`` lists row indices key by key (input order kept within a key); ``starts`` has
    ``n_keys + 1`` entries, segment k being ``order[starts[k]:starts[k+1]]`` (maybe empty).
    """
    keys = np.ascontiguousarray(keys)
    if keys.dtype.kind not in "iu":
        raise InputError(f"group_by_key: keys must be integers, got dtype {keys.dtype}")
    n_keys = int(n_keys)
    if n_keys < 0:
        raise InputError(f"group_by_key: n_keys must be >= 0, got {n_keys}")
    if len(keys) and (keys.min() < 0 or keys.max() >= n_keys):
        bad = keys[(keys < 0) | (keys >= n_keys)][:3].tolist()
        raise InputError(f"group_by_key: keys must lie in [0, {n_keys}), got {bad}")
    starts = np.zeros(n_keys + 1, np.int64)
    order = np.empty(len(keys), np.int64)
    _group(keys.astype(np.int64), n_keys, starts, order)
    return order, starts


def _check_segments(values, starts, name, *, finite=True):
    values = np.ascontiguousarray(values)
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    if starts.ndim != 1 or len(starts) < 1:
        raise InputError(f"{name}: starts must be a 1-d array with at least one entry")
    if starts[0] != 0 or starts[-1] != len(values) or (len(starts) > 1 and np.any(np.diff(starts) < 0)):
        raise InputError(f"{name}: starts must rise from 0 to len(values) ({len(values)}), "
                         f"got {starts[:3].tolist()}...{starts[-1:].tolist()}")
    if finite and values.dtype.kind == "f" and len(values) and not np.isfinite(values).all():
        i = int(np.flatnonzero(~np.isfinite(values))[0])
        raise InputError(f"{name}: values must be finite; value {float(values[i])!r} at row {i}")
    return values, starts


@njit(nogil=True, cache=True)
def _seg_sum(values, starts, out):
    for s in range(starts.shape[0] - 1):
        acc = values[0] * 0 if values.shape[0] > 0 else 0
        for i in range(starts[s], starts[s + 1]):
            acc += values[i]
        out[s] = acc


@njit(nogil=True, cache=True)
def _seg_min(values, starts, out, empty):
    for s in range(starts.shape[0] - 1):
        if starts[s] == starts[s + 1]:
            out[s] = empty
            continue
        m = values[starts[s]]
        for i in range(starts[s] + 1, starts[s + 1]):
            if values[i] < m:
                m = values[i]
        out[s] = m


@njit(nogil=True, cache=True)
def _seg_max(values, starts, out, empty):
    for s in range(starts.shape[0] - 1):
        if starts[s] == starts[s + 1]:
            out[s] = empty
            continue
        m = values[starts[s]]
        for i in range(starts[s] + 1, starts[s + 1]):
            if values[i] > m:
                m = values[i]
        out[s] = m


@njit(nogil=True, cache=True)
def _seg_first(values, starts, out, empty):
    for s in range(starts.shape[0] - 1):
        out[s] = values[starts[s]] if starts[s] < starts[s + 1] else empty


@njit(nogil=True, cache=True)
def _seg_last(values, starts, out, empty):
    for s in range(starts.shape[0] - 1):
        out[s] = values[starts[s + 1] - 1] if starts[s] < starts[s + 1] else empty


def segment_sum(values, starts):
    """Sum per segment (0 for an empty segment); integers sum exactly in int64."""
    values, starts = _check_segments(values, starts, "segment_sum")
    dtype = np.int64 if values.dtype.kind in "iub" else np.float64
    out = np.empty(len(starts) - 1, dtype)
    _seg_sum(values.astype(dtype, copy=False), starts, out)
    return out


def _empty_of(values, empty):
    if empty is not None:
        return empty
    return np.nan if values.dtype.kind == "f" else 0


def segment_min(values, starts, *, empty=None):
    """Minimum per segment; ``empty`` (default NaN for floats, 0 for integers) for empty segments."""
    values, starts = _check_segments(values, starts, "segment_min")
    e = _empty_of(values, empty)
    out = np.empty(len(starts) - 1, np.float64 if isinstance(e, float) and values.dtype.kind != "f" else values.dtype)
    _seg_min(values, starts, out, out.dtype.type(e))
    return out


def segment_max(values, starts, *, empty=None):
    values, starts = _check_segments(values, starts, "segment_max")
    e = _empty_of(values, empty)
    out = np.empty(len(starts) - 1, np.float64 if isinstance(e, float) and values.dtype.kind != "f" else values.dtype)
    _seg_max(values, starts, out, out.dtype.type(e))
    return out


def segment_count(starts):
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    if len(starts) < 1 or np.any(np.diff(starts) < 0):
        raise InputError("segment_count: starts must be a non-decreasing 1-d array")
    return np.diff(starts)


def segment_first(values, starts, *, empty=None):
    values, starts = _check_segments(values, starts, "segment_first", finite=False)
    e = _empty_of(values, empty)
    out = np.empty(len(starts) - 1, np.float64 if isinstance(e, float) and values.dtype.kind != "f" else values.dtype)
    _seg_first(values, starts, out, out.dtype.type(e))
    return out


def segment_last(values, starts, *, empty=None):
    values, starts = _check_segments(values, starts, "segment_last", finite=False)
    e = _empty_of(values, empty)
    out = np.empty(len(starts) - 1, np.float64 if isinstance(e, float) and values.dtype.kind != "f" else values.dtype)
    _seg_last(values, starts, out, out.dtype.type(e))
    return out


@njit(nogil=True, cache=True)
def _topk_mean(values, starts, k, mean, used):
    for s in range(starts.shape[0] - 1):
        a = starts[s]
        b = starts[s + 1]
        n = b - a
        kk = min(k[s], n)
        used[s] = kk
        if kk <= 0:
            mean[s] = np.nan
            continue
        buf = np.sort(values[a:b])  # ascending; segments are short (years of a career)
        acc = 0.0
        for j in range(n - 1, n - 1 - kk, -1):
            acc += buf[j]
        mean[s] = acc / kk


def segment_topk_mean(values, starts, k) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the ``k[s]`` largest values of each segment (all of them when fewer).

    Returns ``(mean, used)``; ``mean`` is NaN for an empty segment or k <= 0. Summation
    goes from the largest value down, so the result does not depend on row order.
    """
    values, starts = _check_segments(values, starts, "segment_topk_mean")
    k = np.ascontiguousarray(k, dtype=np.int64)
    if k.shape != (len(starts) - 1,):
        raise InputError(f"segment_topk_mean: k must have one entry per segment ({len(starts) - 1}), got {k.shape}")
    if len(k) and k.min() < 0:
        raise InputError(f"segment_topk_mean: k must be >= 0, got {int(k.min())}")
    mean = np.empty(len(k), np.float64)
    used = np.empty(len(k), np.int64)
    _topk_mean(values.astype(np.float64, copy=False), starts, k, mean, used)
    return mean, used


@njit(nogil=True, cache=True)
def _rolling_count(month, starts, period, phase, lo, hi):
    total = 0
    for s in range(starts.shape[0] - 1):
        a = starts[s]
        b = starts[s + 1]
        if a == b:
            continue
        first = month[a] - hi  # earliest review whose window reaches the first month
        last = month[b - 1] - lo
        r0 = first + ((phase - first) % period)
        if r0 <= last:
            total += (last - r0) // period + 1
    return total


@njit(nogil=True, cache=True)
def _rolling_fill(month, values, starts, period, phase, lo, hi, seg, review, total, months):
    o = 0
    for s in range(starts.shape[0] - 1):
        a = starts[s]
        b = starts[s + 1]
        if a == b:
            continue
        first = month[a] - hi
        last = month[b - 1] - lo
        r = first + ((phase - first) % period)
        left = a  # first row with month >= r + lo
        right = a  # first row with month > r + hi
        acc = 0
        while r <= last:
            while right < b and month[right] <= r + hi:
                acc += values[right]
                right += 1
            while left < right and month[left] < r + lo:
                acc -= values[left]
                left += 1
            seg[o] = s
            review[o] = r
            total[o] = acc
            months[o] = right - left
            o += 1
            r += period


def rolling_window_sum(month, values, starts, *, period: int = 3, phase: int = 0, lo: int = -13, hi: int = -2):
    """Rolling sums per segment at review months.

    Rows of each segment must be sorted by ``month`` (an integer month index) with one row
    per month. Review months r are those with ``r % period == phase`` whose window
    ``[r + lo, r + hi]`` holds at least one row of the segment; for each, the sum of
    ``values`` (int64, exact) and the number of months in the window. Defaults: quarterly
    reviews, window from 13 to 2 months before (the housing-aid rule since 2021).
    Returns ``(segment, review_month, total, months)``.
    """
    month = np.ascontiguousarray(month, dtype=np.int64)
    values, starts = _check_segments(values, starts, "rolling_window_sum")
    if values.dtype.kind not in "iu":
        raise InputError("rolling_window_sum: values must be integers (amounts in cents)")
    if len(month) != len(values):
        raise InputError("rolling_window_sum: month and values differ in length")
    if not lo <= hi or period < 1:
        raise InputError(f"rolling_window_sum: need lo <= hi and period >= 1 (lo={lo}, hi={hi}, period={period})")
    if len(month) > 1:
        d = np.diff(month)
        inner = np.ones(len(d), bool)
        inner[starts[1:-1][(starts[1:-1] > 0) & (starts[1:-1] < len(month))] - 1] = False
        if np.any(d[inner] <= 0):
            raise InputError("rolling_window_sum: months must be strictly increasing within each segment")
    n = _rolling_count(month, starts, period, phase % period, lo, hi)
    seg = np.empty(n, np.int64)
    review = np.empty(n, np.int64)
    total = np.empty(n, np.int64)
    months = np.empty(n, np.int64)
    _rolling_fill(month, values.astype(np.int64), starts, period, phase % period, lo, hi, seg, review, total, months)
    return seg, review, total, months


@njit(nogil=True, cache=True)
def count_runs(a, b):
    """Number of runs of equal (a, b) pairs in row order (rows grouped by both keys)."""
    n = 0
    for i in range(a.shape[0]):
        if i == 0 or a[i] != a[i - 1] or b[i] != b[i - 1]:
            n += 1
    return n


@njit(nogil=True, cache=True, inline="always")
def run_end(keys, order, use_order, j):
    """End of the run of equal keys that starts at position ``j`` (along ``order`` when
    ``use_order``, else in row order): the kernels' walk over rows grouped by person."""
    n = keys.shape[0]
    p = keys[order[j] if use_order else j]
    k = j + 1
    while k < n and keys[order[k] if use_order else k] == p:
        k += 1
    return k


def integer_input(values, where: str, name: str) -> np.ndarray:
    """An integer input array as is (kernels compile per dtype, so narrow columns are not
    copied); other dtypes become int64, and floats that are not whole numbers are refused."""
    a = np.ascontiguousarray(values)
    if a.dtype.kind not in "iu" or a.dtype == np.uint64:
        if a.size and a.dtype.kind == "f" and not np.array_equal(a, np.floor(a)):
            raise InputError(f"{where}: {name} must be integers, got dtype {a.dtype}")
        a = a.astype(np.int64)
    return a


def optional_counts(values, where: str, name: str, n: int) -> tuple[bool, np.ndarray]:
    """An optional column of how many rows each row stands for: ``(given, counts)``, the counts
    checked as ``n`` integers >= 0 (``integer_input``); when not given, a one-entry placeholder
    that the compiled kernels ignore."""
    if values is None:
        return False, np.zeros(1, np.int64)
    counts = integer_input(values, where, name)
    if len(counts) != n:
        raise InputError(f"{where}: {name} differs in length from person")
    if n and counts.min() < 0:
        raise InputError(f"{where}: {name} must be >= 0, got {int(counts.min())}")
    return True, counts


def grouping_order(keys, n_keys: int, is_sorted: bool) -> np.ndarray:
    """Row order that groups rows by key for the kernels' walk (``run_end``): empty when the
    rows already come sorted by key (the walk then goes in row order), else one stable
    counting sort (linear, no comparisons)."""
    if is_sorted:
        return np.zeros(0, np.int64)
    return group_by_key(keys, n_keys)[0]


KERNELS = (_group, _seg_sum, _seg_min, _seg_max, _seg_first, _seg_last, _topk_mean, _rolling_count, _rolling_fill,
           count_runs, run_end)
