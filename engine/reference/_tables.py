"""The reference tables (PASS, SMIC, salary validating a quarter, revaluation, cohort rules).

The one module that reads engine/reference/*.tsv (see its README for sources). Tables are
read once per process and returned as numpy arrays indexed by year, ready for kernels.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np

from nirlink.kernels import ReferenceDataError

__all__ = ["YearTable", "CohortTable", "AspaTable", "year_table", "cohort_table", "aspa_table", "FRF_PER_EUR"]

FRF_PER_EUR = 6.55957


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


@dataclass(frozen=True)
class YearTable:
    """Per-year parameters in euros, for years ``first_year .. last_year`` (index = year - first_year)."""

    first_year: int
    last_year: int
    pass_annual: np.ndarray  # float64, EUR
    smic_hourly: np.ndarray  # float64, EUR, in force on 1 January
    salval: np.ndarray  # float64, EUR: yearly salary validating one quarter
    reval: np.ndarray  # float64: cumulative SAM revaluation coefficient (1.0 after the last published year)
    reval_published: np.ndarray  # bool: False where reval is the 1.0 default

    @property
    def years(self) -> np.ndarray:
        return np.arange(self.first_year, self.last_year + 1, dtype=np.int16)

    def index(self, years, *, what: str = "year") -> np.ndarray:
        """Row index of each year; raises ReferenceDataError naming the first years outside the table."""
        years = np.asarray(years)
        if len(years) == 0:
            return np.zeros(0, dtype=np.int64)
        bad = (years < self.first_year) | (years > self.last_year)
        if bad.any():
            wrong = np.unique(years[bad])
            shown = ", ".join(str(int(y)) for y in wrong[:5])
            raise ReferenceDataError(
                f"{what} {shown} outside the reference tables ({self.first_year}-{self.last_year}); "
                f"{int(bad.sum())} value(s) affected"
            )
        return years.astype(np.int64) - self.first_year


@dataclass(frozen=True)
class CohortTable:
    """Rules per birth cohort and birth-month range (rows sorted by cohort, month_from)."""

    cohort: np.ndarray  # int16
    month_from: np.ndarray  # int8
    month_to: np.ndarray  # int8
    quarters_required: np.ndarray  # int16 (LFSS 2026)
    sam_best_years: np.ndarray  # int8
    legal_age_months: np.ndarray  # int16: legal retirement age in months (62y9m = 753)
    full_rate_age_months: np.ndarray  # int16: age at which the full rate is automatic (no decote)

    def best_years(self, birth_year, birth_month=None) -> np.ndarray:
        """Number of best years in the SAM for each person (cohorts outside the table are refused)."""
        return self._lookup(self.sam_best_years, birth_year, birth_month)

    def required_quarters(self, birth_year, birth_month=None) -> np.ndarray:
        return self._lookup(self.quarters_required, birth_year, birth_month)

    def legal_age(self, birth_year, birth_month=None) -> np.ndarray:
        """Legal retirement age of each person, in months."""
        return self._lookup(self.legal_age_months, birth_year, birth_month)

    def full_rate_age(self, birth_year, birth_month=None) -> np.ndarray:
        """Age (months) from which the full rate is granted whatever the quarters."""
        return self._lookup(self.full_rate_age_months, birth_year, birth_month)

    def _lookup(self, column, birth_year, birth_month):
        birth_year = np.asarray(birth_year, dtype=np.int64)
        month = np.ones_like(birth_year) if birth_month is None else np.asarray(birth_month, dtype=np.int64)
        month = np.where((month < 1) | (month > 12), 1, month)  # unknown month: the cohort's first rule
        lo, hi = int(self.cohort[0]), int(self.cohort[-1])
        bad = (birth_year < lo) | (birth_year > hi)
        if bad.any():
            shown = ", ".join(str(int(y)) for y in np.unique(birth_year[bad])[:5])
            raise ReferenceDataError(f"birth cohort {shown} outside the cohort table ({lo}-{hi})")
        key = birth_year * 16 + month
        table_key = self.cohort.astype(np.int64) * 16 + self.month_from
        pos = np.searchsorted(table_key, key, side="right") - 1
        return column[pos]


@functools.cache
def year_table() -> YearTable:
    rows = _rows("pass_smic_salval_1990_2026.tsv")
    years = np.array([int(r["year"]) for r in rows])
    if not np.array_equal(years, np.arange(years[0], years[-1] + 1)):
        raise ReferenceDataError("pass_smic_salval table: years are not contiguous")
    frf = np.array([r["currency"] == "FRF" for r in rows])
    pass_eur = np.array([float(r["PASS_annual_EUR"]) for r in rows])
    smic_eur = np.array([float(r["SMIC_hourly_Jan1_EUR"]) for r in rows])
    # The computed column (200 or 150 x SMIC of 1 January) is filled for every year and
    # equals the published value where one exists ('match' column of the source).
    salval_native = np.array([float(r["salval_computed(200|150 x SMIC Jan1)"]) for r in rows])
    salval_eur = np.where(frf, salval_native / FRF_PER_EUR, salval_native)
    coeffs = {int(r["salary_year"]): float(r["coefficient"]) for r in _rows("sam_reval_cumulative_coeffs.tsv")}
    published = np.array([int(y) in coeffs for y in years])
    reval = np.array([coeffs.get(int(y), 1.0) for y in years])
    return YearTable(
        first_year=int(years[0]),
        last_year=int(years[-1]),
        pass_annual=pass_eur,
        smic_hourly=smic_eur,
        salval=salval_eur,
        reval=reval,
        reval_published=published,
    )


@functools.cache
def cohort_table() -> CohortTable:
    rows = _rows("cohorts.tsv")
    return CohortTable(
        cohort=np.array([int(r["cohort"]) for r in rows], dtype=np.int16),
        month_from=np.array([int(r["month_from"]) for r in rows], dtype=np.int8),
        month_to=np.array([int(r["month_to"]) for r in rows], dtype=np.int8),
        quarters_required=np.array([int(r["quarters_required_lfss2026"]) for r in rows], dtype=np.int16),
        sam_best_years=np.array([int(r["sam_best_years"]) for r in rows], dtype=np.int8),
        legal_age_months=np.array([_age_months(r["legal_age"]) for r in rows], dtype=np.int16),
        full_rate_age_months=np.array([_age_months(r["age_annulation_decote"]) for r in rows], dtype=np.int16),
    )


def _age_months(text: str) -> int:
    """'62y9m' or '62' -> months."""
    years, _, months = text.strip().rstrip("m").partition("y")
    try:
        return int(years) * 12 + (int(months) if months else 0)
    except ValueError:
        raise ReferenceDataError(f"cohort table: age {text!r} is not like 62 or 62y9m") from None


@dataclass(frozen=True)
class AspaTable:
    """Single-person resource ceiling of the minimum old-age benefit (ASPA), per month."""

    month_from: np.ndarray  # int64 month index (year * 12 + month - 1) from which each amount applies
    monthly: np.ndarray  # float64 EUR

    def yearly_ceiling(self, month_index) -> np.ndarray:
        """12 x the monthly ceiling in force in each month (NaN before the first row or after
        the last known year)."""
        month_index = np.asarray(month_index, dtype=np.int64)
        pos = np.searchsorted(self.month_from, month_index, side="right") - 1
        last_known = (self.month_from[-1] // 12) * 12 + 11  # through December of the last row's year
        out = 12.0 * self.monthly[np.maximum(pos, 0)]
        return np.where((pos < 0) | (month_index > last_known), np.nan, out)


@functools.cache
def aspa_table() -> AspaTable:
    rows = _rows("aspa_ceiling.tsv")
    months = np.array([int(r["date_from"][:4]) * 12 + int(r["date_from"][5:7]) - 1 for r in rows], dtype=np.int64)
    if not np.all(np.diff(months) > 0):
        raise ReferenceDataError("aspa_ceiling table: dates are not increasing")
    return AspaTable(month_from=months, monthly=np.array([float(r["monthly_single_eur"]) for r in rows]))
