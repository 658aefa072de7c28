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
from ._segments import count_runs, lexsort_dense, rolling_window_sum

__all__ = ["RESOURCE_KINDS", "aggregate_resources"]

RESOURCE_KINDS = ("salary", "pension", "complementary_pension", "unemployment_benefit", "daily_allowance", "other")


@njit(nogil=True, cache=True)
def _months(person, month, kind, cents, order, out_person, out_month, out_kind, out_total, out_rows):
    o = -1
    j = 0
    n = order.shape[0]
    while j < n:
        i = order[j]
        p = person[i]
        m = month[i]
        o += 1
        out_person[o] = p
        out_month[o] = m
        total = 0
        rows = 0
        while j < n and person[order[j]] == p and month[order[j]] == m:
            r = order[j]
            out_kind[o, kind[r]] += cents[r]
            total += cents[r]
            rows += 1
            j += 1
        out_total[o] = total
        out_rows[o] = rows


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
            for k in range(by_kind.shape[1]):
                out_kind[o, k] += by_kind[j, k]
            out_total[o] += total[j]
            out_months[o] += 1
            j += 1


def aggregate_resources(person, n_persons: int, month, kind, amount, *, review_period: int = 3,
                        review_phase: int = 0, window_lo: int = -13, window_hi: int = -2,
                        first_review_month: int | None = None) -> dict:
    """Aggregate resource rows (person: dense index; month: absolute month index; kind: index
    into RESOURCE_KINDS; amount: float64 EUR, finite and >= 0).

    Returns ``{"months": ..., "years": ..., "reviews": ...}`` (dicts of arrays; amounts in
    cents, per-kind amounts as 2-d arrays with one column per kind).
    """
    person = np.ascontiguousarray(person, dtype=np.int64)
    month = np.ascontiguousarray(month, dtype=np.int64)
    kind = np.ascontiguousarray(kind, dtype=np.int64)
    amount = np.ascontiguousarray(amount, dtype=np.float64)
    n = len(person)
    if not (len(month) == len(kind) == len(amount) == n):
        raise InputError("aggregate_resources: person, month, kind and amount differ in length")
    if n and (person.min() < 0 or person.max() >= n_persons):
        raise InputError(f"aggregate_resources: person index outside [0, {n_persons})")
    if n and (kind.min() < 0 or kind.max() >= len(RESOURCE_KINDS)):
        raise InputError(f"aggregate_resources: kind codes must lie in [0, {len(RESOURCE_KINDS)})")
    check_amounts(amount, np.ones(n, bool), where="aggregate_resources", what="amount")
    if n and month.min() < 0:
        raise InputError(f"aggregate_resources: month index must be >= 0, got {int(month.min())}")
    cents = np.round(amount * 100.0).astype(np.int64)
    k = len(RESOURCE_KINDS)
    m0 = int(month.min()) if n else 0
    span = int(month.max()) - m0 + 1 if n else 1
    order = lexsort_dense(person, n_persons, month - m0, span)
    m = count_runs(person, month, order) if n else 0
    months = {"person": np.empty(m, np.int64), "month": np.empty(m, np.int64), "by_kind": np.zeros((m, k), np.int64),
              "total": np.empty(m, np.int64), "rows": np.empty(m, np.int64)}
    if m:
        _months(person, month, kind, cents, order, months["person"], months["month"], months["by_kind"],
                months["total"], months["rows"])
    ny = count_runs(months["person"], months["month"] // 12, np.arange(m)) if m else 0
    years = {"person": np.empty(ny, np.int64), "year": np.empty(ny, np.int64), "by_kind": np.zeros((ny, k), np.int64),
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
    return {"months": months, "years": years, "reviews": reviews}
