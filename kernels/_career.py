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
from ._segments import count_runs, lexsort_dense

__all__ = ["CAREER_KINDS", "ASSIMILATION_DAYS", "aggregate_career"]

CAREER_KINDS = ("salary", "unemployment", "sickness", "maternity", "disability", "military")
# days per assimilated quarter for each kind; 0 = one quarter per period (maternity); salary unused
ASSIMILATION_DAYS = np.array([0, 50, 60, 0, 90, 90], np.int64)
SAM_QUARTER_RULE_FROM = 2004


@njit(nogil=True, cache=True)
def _person_years(person, year_idx, kind, cents, days, order, assim_days, pass_cents, salval_cents, reval,
                  first_year, out_person, out_year, out_gross, out_capped, out_qsal, out_qassim, out_qtotal,
                  out_revalued, out_eligible):
    n_kinds = assim_days.shape[0]
    kind_days = np.zeros(n_kinds, np.int64)
    o = -1
    j = 0
    n = order.shape[0]
    while j < n:
        i = order[j]
        p = person[i]
        y = year_idx[i]
        gross = 0
        for k in range(n_kinds):
            kind_days[k] = 0
        periods_one = 0
        while j < n and person[order[j]] == p and year_idx[order[j]] == y:
            r = order[j]
            k = kind[r]
            if k == 0:
                gross += cents[r]
            elif assim_days[k] == 0:
                periods_one += 1
            else:
                kind_days[k] += days[r]
            j += 1
        o += 1
        capped = gross if gross < pass_cents[y] else pass_cents[y]
        qs = int(np.floor(gross / salval_cents[y])) if gross > 0 else 0
        if qs > 4:
            qs = 4
        qa = periods_one
        for k in range(1, n_kinds):
            if assim_days[k] > 0:
                qa += kind_days[k] // assim_days[k]
        qt = qs + qa
        if qt > 4:
            qt = 4
        out_person[o] = p
        out_year[o] = first_year + y
        out_gross[o] = gross
        out_capped[o] = capped
        out_qsal[o] = qs
        out_qassim[o] = qa
        out_qtotal[o] = qt
        out_revalued[o] = (capped / 100.0) * reval[y]
        out_eligible[o] = gross > 0 and (first_year + y < 2004 or qt >= 1)


def aggregate_career(person, n_persons: int, year, kind, gross_salary, days, *, best_years, table) -> dict:
    """Aggregate career rows.

    person: int64 dense person index in [0, n_persons); year: int; kind: int8 index into
    CAREER_KINDS; gross_salary: float64 EUR (NaN allowed only on non-salary rows); days:
    int; best_years: int per person (N of the SAM); table: the reference YearTable.
    Returns ``{"years": {...per person-year arrays...}, "persons": {...per person arrays...}}``.
    """
    person = np.ascontiguousarray(person, dtype=np.int64)
    year = np.ascontiguousarray(year, dtype=np.int64)
    kind = np.ascontiguousarray(kind, dtype=np.int64)
    gross_salary = np.ascontiguousarray(gross_salary, dtype=np.float64)
    days = np.ascontiguousarray(days, dtype=np.int64)
    n = len(person)
    if not (len(year) == len(kind) == len(gross_salary) == len(days) == n):
        raise InputError("aggregate_career: person, year, kind, gross_salary and days differ in length")
    best_years = np.ascontiguousarray(best_years, dtype=np.int64)
    if best_years.shape != (n_persons,):
        raise InputError(f"aggregate_career: best_years needs one entry per person ({n_persons}), got {best_years.shape}")
    if n and (person.min() < 0 or person.max() >= n_persons):
        raise InputError(f"aggregate_career: person index outside [0, {n_persons})")
    if n and (kind.min() < 0 or kind.max() >= len(CAREER_KINDS)):
        bad = int(kind[(kind < 0) | (kind >= len(CAREER_KINDS))][0])
        raise InputError(f"aggregate_career: kind code {bad} is not one of {len(CAREER_KINDS)} career kinds")
    year_idx = table.index(year, what="career year")  # raises naming the years outside the tables
    salary_rows = kind == 0
    check_amounts(gross_salary, salary_rows, where="aggregate_career", what="gross_salary on salary rows")
    if n and days.min() < 0:
        i = int(np.argmin(days))
        raise InputError(f"aggregate_career: days must be >= 0; {int(days[i])} at row {i}")
    cents = np.where(salary_rows, np.round(np.where(salary_rows, gross_salary, 0.0) * 100.0), 0).astype(np.int64)
    n_years = table.last_year - table.first_year + 1
    order = lexsort_dense(person, n_persons, year_idx, n_years)
    m = count_runs(person, year_idx, order) if n else 0
    ys = {
        "person": np.empty(m, np.int64), "year": np.empty(m, np.int16), "gross_cents": np.empty(m, np.int64),
        "capped_cents": np.empty(m, np.int64), "quarters_salary": np.empty(m, np.int8),
        "quarters_assimilated": np.empty(m, np.int16), "quarters": np.empty(m, np.int8),
        "revalued_capped": np.empty(m, np.float64), "counts_for_sam": np.empty(m, np.bool_),
    }
    if n:
        pass_cents = np.round(table.pass_annual * 100).astype(np.int64)
        salval_cents = table.salval * 100.0
        _person_years(person, year_idx, kind, cents, days, order, ASSIMILATION_DAYS, pass_cents, salval_cents,
                      table.reval, table.first_year, ys["person"], ys["year"], ys["gross_cents"], ys["capped_cents"],
                      ys["quarters_salary"], ys["quarters_assimilated"], ys["quarters"], ys["revalued_capped"],
                      ys["counts_for_sam"])
    # per person: person-years are grouped by person already (sorted order)
    starts = np.searchsorted(ys["person"], np.arange(n_persons + 1), side="left").astype(np.int64)
    from ._segments import segment_max, segment_min, segment_sum, segment_topk_mean

    eligible = ys["counts_for_sam"]
    # best years among eligible years: ineligible ones are pushed below every real value
    keyed = np.where(eligible, ys["revalued_capped"], -1.0)
    elig_count = segment_sum(eligible.astype(np.int64), starts)
    mean, used = segment_topk_mean(keyed, starts, np.minimum(best_years, elig_count))
    persons = {
        "quarters": segment_sum(ys["quarters"].astype(np.int64), starts),
        "first_year": segment_min(ys["year"].astype(np.int64), starts, empty=0),
        "last_year": segment_max(ys["year"].astype(np.int64), starts, empty=0),
        "years": np.diff(starts),
        "sam": np.where(used > 0, mean, 0.0),
        "sam_years": used,
        "gross_cents": segment_sum(ys["gross_cents"], starts),
    }
    return {"years": ys, "persons": persons}
