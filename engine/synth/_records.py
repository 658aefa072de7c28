"""Synthetic careers and monthly resources of the persons of one block.

The draws and the rows are made by Numba kernels (_expand.py) drawing from the block's
generator inside their loops; rows come out grouped by person (then year or month), as a
pension fund's extracts usually are.

Career model (per person): start age 16-30 (mean ~20), end at 60-64 or death; careers
are clipped to the configured years (1990-2025 by default, where the reference tables
exist). Each year the person stays with the current employer or, with probability 0.15,
changes (a partial year at each, and in a third of the cases an unemployment period in
between); 4% of years are inactive (no row). On top of that, a Poisson number of extra
rows per active year - a second short job, sickness, maternity (women 20-42),
unemployment - whose mean is set so that the block reaches the configured rows per
person. Salaries: a person's level is lognormal around 1.4 x the annual SMIC of the year
(35 h), growing 1.5% a year of experience; 12% of years part-time (50-80%).

Resource model: for every month of the window, an employed person gets a salary from
the year's main employer, a retired person a base and a complementary pension, a person
in an inactive year an unemployment benefit (70%); extra rows (daily allowances, a second
salary) are drawn with a Poisson mean set to reach the configured rows per person.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nirlink.engine.reference._tables import year_table

from ._expand import draw_careers
from ._expand_resources import draw_resources

__all__ = ["Careers", "Resources", "make_careers", "make_resources", "CAREER_KINDS", "RESOURCE_KINDS", "PAYERS",
           "VersionSpace"]

CAREER_KINDS = ("salary", "unemployment", "sickness", "maternity")
RESOURCE_KINDS = ("salary", "pension", "complementary_pension", "unemployment_benefit", "daily_allowance",
                  "minimum_old_age_benefit")
# Payers other than employers; they take the employer indices M .. M+3 of the pool.
PAYERS = ("pension_fund", "complementary_fund", "unemployment_agency", "health_insurance")
P_PENSION, P_COMPLEMENTARY, P_UNEMPLOYMENT, P_HEALTH = range(4)
HOURS_PER_YEAR = 1820.0  # 35 h x 52 weeks


@dataclass
class Careers:
    person: np.ndarray  # int32 person index in the block
    version: np.ndarray  # int64 identity version (see VersionSpace)
    employer: np.ndarray  # int64 employer index in the global pool (payers M..M+3)
    year: np.ndarray  # int16
    start: np.ndarray  # int32 days since epoch
    end: np.ndarray  # int32
    kind: np.ndarray  # int8 index into CAREER_KINDS
    gross: np.ndarray  # float64 EUR, NaN for non-salary periods
    days: np.ndarray  # int16
    # person-year view, used by the resource model
    py_start: np.ndarray  # first person-year index of each person
    py_employer: np.ndarray  # main employer of the year, -1 if inactive
    py_spell_version: np.ndarray  # identity version of the main employer spell
    py_level: np.ndarray  # yearly full-time salary level x part-time factor
    lo: np.ndarray  # first and last career years of each person (lo > hi: none)
    hi: np.ndarray
    retire_year: np.ndarray
    level_base: np.ndarray  # person's multiplier of the SMIC


@dataclass
class Resources:
    person: np.ndarray
    version: np.ndarray
    payer: np.ndarray
    period: np.ndarray  # int32 days since epoch (first day of month)
    kind: np.ndarray  # int8 index into RESOURCE_KINDS
    amount: np.ndarray  # float64 EUR


class VersionSpace:
    """Identity versions: one per (person, payer), one per employment spell, one per short job.

    A version is what one declarant (employer or payer) knows of a person; the noise model
    draws its errors once per version, so every row of that declarant repeats them.
    """

    def __init__(self, n_persons: int, n_pool: int):
        self.n = n_persons
        self.n_pool = n_pool
        self.person = [np.repeat(np.arange(n_persons), 4)]
        self.declarant = [np.tile(np.arange(n_pool, n_pool + 4), n_persons)]
        self.size = 4 * n_persons

    def payer(self, person, payer):
        return np.asarray(person, np.int64) * 4 + payer

    def add(self, person, declarant) -> np.ndarray:
        k = len(person)
        ids = np.arange(self.size, self.size + k, dtype=np.int64)
        self.person.append(np.asarray(person, np.int64))
        self.declarant.append(np.asarray(declarant, np.int64))
        self.size += k
        return ids

    def arrays(self):
        return np.concatenate(self.person), np.concatenate(self.declarant)


def _zipf_q(n_employers: int) -> float:
    """The q of the employers' law p(r) ~ 1 / (r + q): the largest employer takes about 1% of
    the jobs, half of the jobs go to the top ~3% of employers."""
    return max(1.0, n_employers / 400)


def _employers(rng, n, n_employers):
    """Employer indices with the Zipf-like law of ``_zipf_q``, drawn by inverting its
    continuous CDF (no table, so the pool can hold millions of employers)."""
    q = _zipf_q(n_employers)
    x = q * ((n_employers + q) / q) ** rng.random(n) - q
    return np.minimum(x.astype(np.int64), n_employers - 1)


def make_careers(rng, persons, *, p, n_employers: int, versions: VersionSpace) -> Careers:
    """The careers of ``persons``; rows starting after a person's death month are not made
    (the extra periods are placed anywhere in the death year)."""
    yt = year_table()
    years = np.arange(p.first_career_year, p.last_career_year + 1)
    smic_year = yt.smic_hourly[yt.index(years, what="career year")] * HOURS_PER_YEAR
    rows, py, per_person, new = draw_careers(
        rng, persons.birth_year.astype(np.int64), persons.sex, persons.death_ordinal.astype(np.int64), smic_year,
        p.first_career_year, p.last_career_year, float(p.career_rows_per_person), n_employers,
        _zipf_q(n_employers), versions.size)
    versions.add(*new)
    person, version, employer, year, start, end, kind, gross, days = rows
    py_start, py_employer, py_version, py_level = py
    lo, hi, retire_year, level_base = per_person
    return Careers(person=person, version=version, employer=employer, year=year, start=start, end=end, kind=kind,
                   gross=gross, days=days, py_start=py_start, py_employer=py_employer, py_spell_version=py_version,
                   py_level=py_level, lo=lo, hi=hi, retire_year=retire_year, level_base=level_base)


def _parse_month(text: str) -> tuple[int, int]:
    y, m = text.split("-")
    return int(y), int(m)


def make_resources(rng, persons, careers: Careers, *, p, n_employers: int, versions: VersionSpace,
                   planting: tuple) -> Resources:
    """The monthly resources of ``persons``, with the cases ``planting`` plants
    (_signals.planting_plan)."""
    yt = year_table()
    fy, fm = _parse_month(p.first_resource_month)
    ly, lm = _parse_month(p.last_resource_month)
    first = fy * 12 + fm - 1
    n_months = ly * 12 + lm - 1 - first + 1
    months = first + np.arange(n_months)
    smic_month = yt.smic_hourly[yt.index(months // 12, what="resource year")] * HOURS_PER_YEAR / 12
    rows, new = draw_resources(
        rng, first, n_months, smic_month, persons.death_ordinal.astype(np.int64), careers.lo, careers.hi,
        careers.py_start, careers.py_employer, careers.py_spell_version, careers.py_level, careers.retire_year,
        careers.level_base, float(p.resource_rows_per_person), n_employers, _zipf_q(n_employers), versions.size,
        *planting)
    versions.add(*new)
    person, version, payer, period, kind, amount = rows
    return Resources(person=person, version=version, payer=payer, period=period, kind=kind, amount=amount)
