"""Career aggregation kernels (regime general rules).

Per person and year: gross salary, salary capped at the year's PASS, quarters validated by
salary = min(4, floor(salary / salary validating one quarter)), quarters assimilated from
non-salary periods, total quarters = min(4, salary quarters + assimilated quarters).

Assimilated periods (Code de la securite sociale, art. R351-12, simplified to what the
career rows carry): one quarter per 50 days of compensated unemployment, per 60 days of
sickness daily allowances, per 90 days of disability pension or of military service, and
one quarter per maternity period (the quarter of the childbirth). Days of one kind are
added up over the year before dividing.

Per person: total quarters, first and last year, and the SAM: the mean of the best N
years (N from the cohort table: 25 from the 1948 cohort) of capped salary x revaluation
coefficient; from 2004 a year counts only if it validated at least one quarter; a year
with no salary never counts. Amounts are summed in cents (int64), so totals are exact and
do not depend on row order.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._errors import InputError, check_amounts
from ._segments import grouping_order, integer_input, optional_counts, run_end

__all__ = ["CAREER_KINDS", "ASSIMILATION_DAYS", "DAYS_KINDS", "aggregate_career"]

CAREER_KINDS = ("salary", "unemployment", "sickness", "maternity", "disability", "military")
# days per assimilated quarter for each kind; 0 = one quarter per period (maternity); salary unused
ASSIMILATION_DAYS = np.array([0, 50, 60, 0, 90, 90], np.int64)
# the kinds whose days are added up over a year before dividing (their per-year days are state)
DAYS_KINDS = tuple(k for k, d in zip(CAREER_KINDS, ASSIMILATION_DAYS) if d > 0)
_DAYS_SLOT = np.array([DAYS_KINDS.index(k) if k in DAYS_KINDS else -1 for k in CAREER_KINDS], np.int64)
SAM_QUARTER_RULE_FROM = 2004


@njit(nogil=True, cache=True)
def _scan(person, n_persons, year, first_year, last_year, kind, n_kinds, gross, days):
    """One pass of checks: 0 when every row is valid, else 1 (the wrapper then finds the
    offending row and names it). Also tells whether rows come sorted by person."""
    sorted_ = True
    prev = -1
    for i in range(person.shape[0]):
        p = person[i]
        y = year[i]
        k = kind[i]
        if p < 0 or p >= n_persons or y < first_year or y > last_year or k < 0 or k >= n_kinds or days[i] < 0:
            return 1, False
        if k == 0:
            g = gross[i]
            if not (g >= 0.0) or g == np.inf:  # NaN, negative or infinite
                return 1, False
        if p < prev:
            sorted_ = False
        prev = p
    return 0, sorted_


@njit(nogil=True, cache=True)
def _career_fused(person, n_persons, year, kind, gross, days, periods, use_periods, order, use_order, best_years,
                  assim_days, days_slot, first_year, pass_cents, salval_cents, reval, y_person, y_year, y_gross, y_capped, y_qsal,
                  y_qassim, y_qtotal, y_revalued, y_eligible, y_days, y_periods, p_quarters, p_first, p_last, p_years,
                  p_sam, p_used, p_gross):
    """Career aggregation in one pass over rows grouped by person (in row order when
    ``use_order`` is false, else along ``order``): per-year accumulators for the current
    person live in small arrays indexed by year, so years need no sort. A row counts
    ``periods[r]`` periods (one when ``use_periods`` is false). Besides the outputs, each
    person-year's accumulators (``y_gross``, ``y_days`` per kind, ``y_periods``): what an
    update from new rows needs. Returns the number of person-years written."""
    n_years = pass_cents.shape[0]
    n_kinds = assim_days.shape[0]
    acc_gross = np.zeros(n_years, np.int64)
    acc_days = np.zeros((n_years, n_kinds), np.int64)
    acc_one = np.zeros(n_years, np.int64)
    seen = np.zeros(n_years, np.bool_)
    assim = np.zeros(n_years, np.bool_)
    sam_buf = np.empty(n_years, np.float64)
    n = person.shape[0]
    o = 0
    j = 0
    while j < n:
        end = run_end(person, order, use_order, j)
        p = person[order[j] if use_order else j]
        ylo = n_years
        yhi = -1
        for t in range(j, end):
            r = order[t] if use_order else t
            y = year[r] - first_year
            seen[y] = True
            if y < ylo:
                ylo = y
            if y > yhi:
                yhi = y
            k = kind[r]
            if k == 0:
                acc_gross[y] += np.int64(np.rint(gross[r] * 100.0))
            elif assim_days[k] == 0:
                acc_one[y] += periods[r] if use_periods else 1
            else:
                acc_days[y, k] += days[r]
                assim[y] = True
        j = end
        quarters = 0
        total = 0
        n_elig = 0
        count = 0
        for y in range(ylo, yhi + 1):
            if not seen[y]:
                continue
            g = acc_gross[y]
            capped = g if g < pass_cents[y] else pass_cents[y]
            qs = int(np.floor(g / salval_cents[y])) if g > 0 else 0
            if qs > 4:
                qs = 4
            qa = acc_one[y]
            if assim[y]:
                for k in range(1, n_kinds):
                    if assim_days[k] > 0:
                        qa += acc_days[y, k] // assim_days[k]
            qt = qs + qa
            if qt > 4:
                qt = 4
            revalued = (capped / 100.0) * reval[y]
            eligible = g > 0 and (first_year + y < 2004 or qt >= 1)
            y_person[o] = p
            y_year[o] = first_year + y
            y_gross[o] = g
            y_capped[o] = capped
            y_qsal[o] = qs
            y_qassim[o] = qa
            y_qtotal[o] = qt
            y_revalued[o] = revalued
            y_eligible[o] = eligible
            for k in range(n_kinds):
                if days_slot[k] >= 0:
                    y_days[o, days_slot[k]] = acc_days[y, k]
            y_periods[o] = acc_one[y]
            o += 1
            quarters += qt
            total += g
            count += 1
            if eligible:
                # insertion into sam_buf kept in descending order (a career has a few dozen years)
                t = n_elig
                while t > 0 and sam_buf[t - 1] < revalued:
                    sam_buf[t] = sam_buf[t - 1]
                    t -= 1
                sam_buf[t] = revalued
                n_elig += 1
            # reset the accumulators for the next person
            seen[y] = False
            acc_gross[y] = 0
            acc_one[y] = 0
            if assim[y]:
                assim[y] = False
                for k in range(n_kinds):
                    acc_days[y, k] = 0
        kk = min(best_years[p], n_elig)
        if kk > 0:
            acc = 0.0
            for t in range(kk):  # from the largest value down: the sum does not depend on row order
                acc += sam_buf[t]
            p_sam[p] = acc / kk
        p_used[p] = kk
        p_quarters[p] = quarters
        p_first[p] = first_year + ylo
        p_last[p] = first_year + yhi
        p_years[p] = count
        p_gross[p] = total
    return o


def _raise_first_error(person, n_persons, year, kind, gross_salary, days, table) -> None:
    """The slow path of the checks, taken only when the scan found a bad row: name it."""
    if person.min() < 0 or person.max() >= n_persons:
        raise InputError(f"aggregate_career: person index outside [0, {n_persons})")
    if kind.min() < 0 or kind.max() >= len(CAREER_KINDS):
        bad = int(kind[(kind < 0) | (kind >= len(CAREER_KINDS))][0])
        raise InputError(f"aggregate_career: kind code {bad} is not one of {len(CAREER_KINDS)} career kinds")
    table.index(year, what="career year")  # raises naming the years outside the tables
    check_amounts(gross_salary, kind == 0, where="aggregate_career", what="gross_salary on salary rows")
    i = int(np.argmin(days))
    raise InputError(f"aggregate_career: days must be >= 0; {int(days[i])} at row {i}")


def aggregate_career(person, n_persons: int, year, kind, gross_salary, days, *, best_years, table,
                     periods=None) -> dict:
    """Aggregate career rows.

    person: int64 dense person index in [0, n_persons); year: int; kind: int8 index into
    CAREER_KINDS; gross_salary: float64 EUR (NaN allowed only on non-salary rows); days:
    int; best_years: int per person (N of the SAM); table: the reference YearTable;
    periods: how many periods each row stands for (counted for the kinds that validate one
    quarter per period: maternity), one when absent - rows that stand for several are how an
    update feeds a person-year's previous state back (engine/stages/_aggregate_update.py).
    Returns ``{"years": {...per person-year arrays...}, "persons": {...per person arrays...}}``;
    the years also hold their state: ``days`` (one column per DAYS_KINDS, the year's days of
    that kind) and ``periods``.
    """
    person = integer_input(person, "aggregate_career", "person")
    year = integer_input(year, "aggregate_career", "year")
    kind = integer_input(kind, "aggregate_career", "kind")
    gross_salary = np.ascontiguousarray(gross_salary, dtype=np.float64)
    days = integer_input(days, "aggregate_career", "days")
    n = len(person)
    if not (len(year) == len(kind) == len(gross_salary) == len(days) == n):
        raise InputError("aggregate_career: person, year, kind, gross_salary and days differ in length")
    best_years = np.ascontiguousarray(best_years, dtype=np.int64)
    if best_years.shape != (n_persons,):
        raise InputError(f"aggregate_career: best_years needs one entry per person ({n_persons}), got {best_years.shape}")
    if len(best_years) and best_years.min() < 0:
        raise InputError(f"aggregate_career: best_years must be >= 0, got {int(best_years.min())}")
    use_periods, periods = optional_counts(periods, "aggregate_career", "periods", n)
    n_years = table.last_year - table.first_year + 1
    status, is_sorted = _scan(person, n_persons, year, table.first_year, table.last_year, kind, len(CAREER_KINDS),
                              gross_salary, days) if n else (0, True)
    if status:
        _raise_first_error(person, n_persons, year, kind, gross_salary, days, table)
    order = grouping_order(person, n_persons, is_sorted)
    cap = min(n, n_persons * n_years)
    ys = {
        "person": np.empty(cap, np.int64), "year": np.empty(cap, np.int16), "gross_cents": np.empty(cap, np.int64),
        "capped_cents": np.empty(cap, np.int64), "quarters_salary": np.empty(cap, np.int8),
        "quarters_assimilated": np.empty(cap, np.int16), "quarters": np.empty(cap, np.int8),
        "revalued_capped": np.empty(cap, np.float64), "counts_for_sam": np.empty(cap, np.bool_),
        # days a year are bounded by the ingest (0-366 a row): int32 holds millions of rows' worth
        "days": np.empty((cap, len(DAYS_KINDS)), np.int32), "periods": np.empty(cap, np.int32),
    }
    persons = {  # zeros: what a person without rows gets
        "quarters": np.zeros(n_persons, np.int64), "first_year": np.zeros(n_persons, np.int64),
        "last_year": np.zeros(n_persons, np.int64), "years": np.zeros(n_persons, np.int64),
        "sam": np.zeros(n_persons, np.float64), "sam_years": np.zeros(n_persons, np.int64),
        "gross_cents": np.zeros(n_persons, np.int64),
    }
    m = _career_fused(person, n_persons, year, kind, gross_salary, days, periods, use_periods, order, not is_sorted,
                      best_years, ASSIMILATION_DAYS, _DAYS_SLOT, table.first_year, np.round(table.pass_annual * 100).astype(np.int64),
                      table.salval * 100.0, table.reval, *ys.values(), *persons.values())
    ys = {k: v[:m] for k, v in ys.items()}
    return {"years": ys, "persons": persons}
