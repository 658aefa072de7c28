"""Resource aggregation kernels: monthly totals by kind, yearly totals, rolling 12-month reviews.

Months are absolute indices (year * 12 + month - 1). Housing aid since 2021 is reassessed
every quarter (January, April, July, October) on the income of the 12 months ending two
months before the review month: for review month M, months M-13 .. M-2. Amounts are
summed in cents (int64): exact, independent of row order.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._errors import InputError, check_amounts
from ._segments import count_runs, grouping_order, integer_input, optional_counts, rolling_window_sum, run_end

__all__ = ["RESOURCE_KINDS", "aggregate_resources"]

RESOURCE_KINDS = ("salary", "pension", "complementary_pension", "unemployment_benefit", "daily_allowance", "other",
                  "minimum_old_age_benefit")


@njit(nogil=True, cache=True)
def _scan(person, n_persons, month, kind, n_kinds, amount):
    """One pass of checks: 0 when every row is valid, else 1 (the wrapper then names the
    offending row). Also the month range and whether rows come sorted by person."""
    sorted_ = True
    prev = -1
    lo = 0
    hi = -1
    for i in range(person.shape[0]):
        p = person[i]
        m = month[i]
        k = kind[i]
        a = amount[i]
        if p < 0 or p >= n_persons or k < 0 or k >= n_kinds or m < 0 or not (a >= 0.0) or a == np.inf:
            return 1, False, 0, -1
        if i == 0 or m < lo:
            lo = m
        if i == 0 or m > hi:
            hi = m
        if p < prev:
            sorted_ = False
        prev = p
    return 0, sorted_, lo, hi


@njit(nogil=True, cache=True)
def _months(person, month, kind, amount, count, use_count, order, use_order, m0, span, out_person, out_month, out_kind,
            out_total, out_rows):
    """Per person and month totals in one pass over rows grouped by person (in row order, or
    along ``order``): the current person's months accumulate in small arrays indexed by
    month, so months need no sort. ``out_kind`` is kind-major (one contiguous row per kind).
    A row counts ``count[r]`` rows (one when ``use_count`` is false)."""
    n_kinds = out_kind.shape[0]
    acc = np.zeros((span, n_kinds), np.int64)
    rows = np.zeros(span, np.int64)
    n = person.shape[0]
    o = 0
    j = 0
    while j < n:
        end = run_end(person, order, use_order, j)
        p = person[order[j] if use_order else j]
        lo = span
        hi = -1
        for t in range(j, end):
            r = order[t] if use_order else t
            m = month[r] - m0
            acc[m, kind[r]] += np.int64(np.rint(amount[r] * 100.0))
            rows[m] += count[r] if use_count else 1
            if m < lo:
                lo = m
            if m > hi:
                hi = m
        j = end
        for m in range(lo, hi + 1):
            if rows[m] == 0:
                continue
            total = 0
            for k in range(n_kinds):
                out_kind[k, o] = acc[m, k]
                total += acc[m, k]
                acc[m, k] = 0
            out_person[o] = p
            out_month[o] = m0 + m
            out_total[o] = total
            out_rows[o] = rows[m]
            rows[m] = 0
            o += 1
    return o


@njit(nogil=True, cache=True)
def _years(person, month, by_kind, total, out_person, out_year, out_kind, out_total, out_months):
    o = -1
    j = 0
    n = person.shape[0]
    while j < n:
        p = person[j]
        y = month[j] // 12
        o += 1
        out_person[o] = p
        out_year[o] = y
        while j < n and person[j] == p and month[j] // 12 == y:
            for k in range(by_kind.shape[0]):
                out_kind[k, o] += by_kind[k, j]
            out_total[o] += total[j]
            out_months[o] += 1
            j += 1


def aggregate_resources(person, n_persons: int, month, kind, amount, *, review_period: int = 3,
                        review_phase: int = 0, window_lo: int = -13, window_hi: int = -2,
                        first_review_month: int | None = None, count=None) -> dict:
    """Aggregate resource rows (person: dense index; month: absolute month index; kind: index
    into RESOURCE_KINDS; amount: float64 EUR, finite and >= 0; count: how many rows each row
    stands for, one when absent - rows that stand for several are how an update feeds a
    person-month's previous totals back, engine/stages/_aggregate_update.py).

    Returns ``{"months": ..., "years": ..., "reviews": ...}`` (dicts of arrays; amounts in
    cents, per-kind amounts as 2-d arrays with one column per kind).
    """
    person = integer_input(person, "aggregate_resources", "person")
    month = integer_input(month, "aggregate_resources", "month")
    kind = integer_input(kind, "aggregate_resources", "kind")
    amount = np.ascontiguousarray(amount, dtype=np.float64)
    n = len(person)
    if not (len(month) == len(kind) == len(amount) == n):
        raise InputError("aggregate_resources: person, month, kind and amount differ in length")
    use_count, count = optional_counts(count, "aggregate_resources", "count", n)
    k = len(RESOURCE_KINDS)
    status, is_sorted, m_lo, m_hi = _scan(person, n_persons, month, kind, k, amount) if n else (0, True, 0, -1)
    if status:
        _raise_first_error(person, n_persons, month, kind, amount)
    order = grouping_order(person, n_persons, is_sorted)
    months = {"person": np.empty(n, np.int64), "month": np.empty(n, np.int64),
              "by_kind": np.empty((k, n), np.int64), "total": np.empty(n, np.int64), "rows": np.empty(n, np.int64)}
    m = _months(person, month, kind, amount, count, use_count, order, not is_sorted, m_lo, m_hi - m_lo + 1, months["person"],
                months["month"], months["by_kind"], months["total"], months["rows"]) if n else 0
    months = {key: (v[:, :m] if key == "by_kind" else v[:m]) for key, v in months.items()}
    ny = count_runs(months["person"], months["month"] // 12) if m else 0
    years = {"person": np.empty(ny, np.int64), "year": np.empty(ny, np.int64), "by_kind": np.zeros((k, ny), np.int64),
             "total": np.zeros(ny, np.int64), "months": np.zeros(ny, np.int64)}
    if ny:
        _years(months["person"], months["month"], months["by_kind"], months["total"], years["person"], years["year"],
               years["by_kind"], years["total"], years["months"])
    starts = np.searchsorted(months["person"], np.arange(n_persons + 1), side="left").astype(np.int64)
    seg, review, total, count = rolling_window_sum(months["month"], months["total"], starts, period=review_period,
                                                   phase=review_phase, lo=window_lo, hi=window_hi)
    if first_review_month is not None:
        keep = review >= first_review_month
        seg, review, total, count = seg[keep], review[keep], total[keep], count[keep]
    reviews = {"person": seg, "review_month": review, "total": total, "months": count}
    # per-kind amounts as (rows, kinds) views whose columns are contiguous
    months["by_kind"] = months["by_kind"].T
    years["by_kind"] = years["by_kind"].T
    return {"months": months, "years": years, "reviews": reviews}


def _raise_first_error(person, n_persons, month, kind, amount) -> None:
    """The slow path of the checks, taken only when the scan found a bad row: name it."""
    if person.min() < 0 or person.max() >= n_persons:
        raise InputError(f"aggregate_resources: person index outside [0, {n_persons})")
    if kind.min() < 0 or kind.max() >= len(RESOURCE_KINDS):
        raise InputError(f"aggregate_resources: kind codes must lie in [0, {len(RESOURCE_KINDS)})")
    check_amounts(amount, np.ones(len(amount), bool), where="aggregate_resources", what="amount")
    raise InputError(f"aggregate_resources: month index must be >= 0, got {int(month.min())}")
