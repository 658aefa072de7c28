"""Synthetic careers and monthly resources of the persons of one block.

The draws are vectorised over persons, person-years and person-months; the rows are
expanded from them by Numba kernels (_expand.py); rows come out grouped by person (then
year or month), as a pension fund's extracts usually are.

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

from ._expand import career_amounts, career_extras, career_rows, resource_amounts, resource_grid, resource_rows

__all__ = ["Careers", "Resources", "make_careers", "make_resources", "CAREER_KINDS", "RESOURCE_KINDS", "PAYERS"]

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
    version: np.ndarray  # int64 identity version (see Versions)
    employer: np.ndarray  # int64 employer index in the global pool (payers M..M+3)
    year: np.ndarray  # int16
    start: np.ndarray  # int32 days since epoch
    end: np.ndarray  # int32
    kind: np.ndarray  # int8 index into CAREER_KINDS
    gross: np.ndarray  # float64 EUR, NaN for non-salary periods
    days: np.ndarray  # int16
    # person-year view, used by the resource model
    py_person: np.ndarray
    py_year: np.ndarray
    py_employer: np.ndarray  # main employer of the year, -1 if inactive
    py_spell_version: np.ndarray  # identity version of the main employer spell
    py_level: np.ndarray  # yearly full-time salary level x part-time factor
    py_start: np.ndarray  # first person-year index of each person
    lo: np.ndarray
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


def _employers(rng, n, n_employers):
    """Employer indices with a Zipf-like law p(r) ~ 1 / (r + q), drawn by inverting its
    continuous CDF (no table, so the pool can hold millions of employers): the largest
    employer takes about 1% of the jobs, half of the jobs go to the top ~3% of employers."""
    q = max(1.0, n_employers / 400)
    x = q * ((n_employers + q) / q) ** rng.random(n) - q
    return np.minimum(x.astype(np.int64), n_employers - 1)


def make_careers(rng, persons, *, p, n_employers: int, versions: VersionSpace) -> Careers:
    yt = year_table()
    n = len(persons)
    by = persons.birth_year.astype(np.int64)
    start_age = np.clip(16 + np.floor(rng.gamma(2.0, 2.2, n)), 16, 30).astype(np.int64)
    retire_age = rng.choice(np.array([60, 61, 62, 62, 63, 64, 64, 65, 67]), n)
    never = rng.random(n) < 0.05
    death = np.where(persons.death_year > 0, persons.death_year.astype(np.int64), 10_000)
    lo = np.maximum(by + start_age, p.first_career_year)
    hi = np.minimum.reduce([by + retire_age - 1, death, np.full(n, p.last_career_year)])
    hi = np.where(never, lo - 1, hi)
    n_years = np.maximum(hi - lo + 1, 0)

    # person-years
    n_py = int(n_years.sum())
    py_start = np.concatenate([[0], np.cumsum(n_years)[:-1]]).astype(np.int64)
    py_person = np.repeat(np.arange(n), n_years)
    py_year = (lo[py_person] + np.arange(n_py) - py_start[py_person]).astype(np.int64)
    first_py = np.zeros(n_py, bool)
    first_py[py_start[n_years > 0]] = True
    last_py = np.zeros(n_py, bool)
    last_py[(py_start + n_years - 1)[n_years > 0]] = True
    switch = first_py | (rng.random(n_py) < 0.15)
    inactive = (rng.random(n_py) < 0.04) & ~first_py
    gap = switch & ~first_py & (rng.random(n_py) < 0.35)

    spell = np.cumsum(switch) - 1
    n_spells = int(switch.sum())
    spell_person = py_person[switch]
    spell_emp = _employers(rng, n_spells, n_employers)
    spell_version = versions.add(spell_person, spell_emp)
    py_emp = spell_emp[spell] if n_py else np.zeros(0, np.int64)
    py_spell_version = spell_version[spell] if n_py else np.zeros(0, np.int64)
    prev_spell = np.maximum(spell - 1, 0)

    yidx = yt.index(py_year, what="career year")
    smic_year = yt.smic_hourly[yidx] * HOURS_PER_YEAR
    level_base = np.exp(rng.normal(np.log(1.4), 0.45, n))
    part = np.where(rng.random(n_py) < 0.12, rng.uniform(0.5, 0.8, n_py), 1.0)
    py_level = smic_year * level_base[py_person] * 1.015 ** (py_year - lo[py_person]) * part

    # rows per person-year: previous employer (switch years), unemployment gap, main, extras
    c_prev = (switch & ~first_py & ~inactive).astype(np.int64)
    c_gap = gap.astype(np.int64)
    c_main = (~inactive).astype(np.int64)
    base_rows = int(c_prev.sum() + c_gap.sum() + c_main.sum())
    active_py = int((~inactive).sum())
    lam = max(0.0, (p.career_rows_per_person * n - base_rows) / max(active_py, 1))
    c_extra = np.where(inactive, 0, rng.poisson(lam, n_py))
    c_total = c_prev + c_gap + c_main + c_extra
    # months: switch month s (2-12); the gap lasts 1-4 months after it
    s_month = rng.integers(2, 13, n_py)
    g_end = np.minimum(s_month + rng.integers(0, 4, n_py), 12)
    first_month = np.where(first_py, rng.integers(1, 13, n_py), 1)
    last_month = np.where(last_py & (py_year < p.last_career_year), rng.integers(1, 13, n_py), 12)
    main_from = np.where(switch & ~first_py, np.where(gap, g_end + 1, s_month), first_month)
    main_from = np.minimum(main_from, last_month)
    if n_py:
        per_spell = (spell_emp, spell_version, prev_spell, py_emp, py_spell_version)
    else:  # no person-year: the kernel reads none of these
        per_spell = (np.zeros(1, np.int64),) * 5
    row_py, slot, person, year, start, end, kind, employer, version = career_rows(
        c_prev, c_gap, c_main, c_total, py_person.astype(np.int64), py_year, s_month.astype(np.int64),
        g_end.astype(np.int64), main_from.astype(np.int64), last_month.astype(np.int64),
        *(a.astype(np.int64) for a in per_spell), n_employers + P_UNEMPLOYMENT, P_UNEMPLOYMENT)

    # extra rows: a short period inside the year
    ex_idx = np.flatnonzero(slot == 3)
    ne = len(ex_idx)
    u = rng.random(ne)
    ex_person = person[ex_idx]
    women = persons.sex[ex_person] == 2
    age = year[ex_idx] - by[ex_person]
    ek = np.where(u < 0.55, 0, np.where(u < 0.85, 2, np.where(u < 0.95, 3, 1)))  # salary/sickness/maternity/unemp
    ek = np.where((ek == 3) & ~(women & (age >= 20) & (age <= 42)), 2, ek)
    length = np.where(ek == 0, rng.integers(10, 120, ne), np.where(ek == 3, 112, rng.integers(10, 200, ne)))
    career_extras(ex_idx, ek.astype(np.int8), length.astype(np.int64), rng.random(ne), year, start, end, kind)
    days, gross = career_amounts(row_py, slot, kind, start, end, py_level if n_py else np.zeros(1))

    # declarants and identity versions of the extra rows
    short = ex_idx[ek == 0]
    short_emp = _employers(rng, len(short), n_employers)
    employer[short] = short_emp
    version[short] = versions.add(person[short], short_emp)
    for kcode, payer in ((1, P_UNEMPLOYMENT), (2, P_HEALTH), (3, P_HEALTH)):
        rows = ex_idx[ek == kcode]
        employer[rows] = n_employers + payer
        version[rows] = versions.payer(person[rows], payer)

    return Careers(
        person=person.astype(np.int32), version=version, employer=employer, year=year.astype(np.int16),
        start=start.astype(np.int32), end=end.astype(np.int32), kind=kind, gross=gross,
        days=days, py_person=py_person, py_year=py_year,
        py_employer=np.where(inactive, -1, py_emp), py_spell_version=py_spell_version, py_level=py_level,
        py_start=py_start, lo=lo, hi=hi, retire_year=by + retire_age, level_base=level_base,
    )


def _parse_month(text: str) -> tuple[int, int]:
    y, m = text.split("-")
    return int(y), int(m)


def make_resources(rng, persons, careers: Careers, *, p, n_employers: int, versions: VersionSpace) -> Resources:
    yt = year_table()
    n = len(persons)
    fy, fm = _parse_month(p.first_resource_month)
    ly, lm = _parse_month(p.last_resource_month)
    first = fy * 12 + fm - 1
    n_months = ly * 12 + lm - 1 - first + 1
    months = first + np.arange(n_months)
    smic_month = yt.smic_hourly[yt.index(months // 12, what="resource year")] * HOURS_PER_YEAR / 12
    has_years = len(careers.py_person) > 0
    py_employer = careers.py_employer.astype(np.int64) if has_years else np.zeros(0, np.int64)
    # person-month grid (person-major)
    c_base, status, py = resource_grid(n, first, n_months, persons.death_ordinal.astype(np.int64),
                                       careers.lo.astype(np.int64), careers.hi.astype(np.int64),
                                       careers.py_start.astype(np.int64), py_employer,
                                       np.asarray(careers.retire_year, np.int64), rng.random(n * n_months))
    base_rows = int(c_base.sum())
    target = p.resource_rows_per_person * n
    if base_rows > target:
        # more monthly income than asked for: drop whole person-months (missing declarations)
        c_base = np.where(rng.random(len(c_base)) < target / base_rows, c_base, 0)
        status = np.where(c_base > 0, status, 0).astype(np.int8)
        base_rows = int(c_base.sum())
    active = status > 0
    lam = max(0.0, (target - base_rows) / max(int(active.sum()), 1))
    c_extra = np.where(active, rng.poisson(lam, len(c_base)), 0)
    person, period, slot, payer, version, level, base_level = resource_rows(
        c_base, c_base + c_extra, status, py, n_months, first, smic_month, careers.level_base,
        careers.py_level if has_years else np.zeros(0), py_employer,
        careers.py_spell_version.astype(np.int64) if has_years else np.zeros(0, np.int64), n_employers)
    n_rows = len(person)
    kind = np.array([0, 1, 2, 3, 0], np.int8)[slot]
    ex = np.flatnonzero(slot == 4)
    daily = rng.random(len(ex)) < 0.6
    d_rows, s_rows = ex[daily], ex[~daily]
    kind[d_rows] = 4
    payer[d_rows] = n_employers + P_HEALTH
    version[d_rows] = versions.payer(person[d_rows], P_HEALTH)
    second = _employers(rng, len(s_rows), n_employers)
    payer[s_rows] = second
    version[s_rows] = versions.add(person[s_rows], second)

    # amounts
    noise = rng.normal(0, 0.05, n_rows)
    noise += 1
    extra = np.zeros(n_rows, np.int8)
    extra[d_rows] = 1
    extra[s_rows] = 2
    daily_days = np.zeros(n_rows, np.int64)
    daily_days[d_rows] = rng.integers(3, 31, len(d_rows))
    amount = resource_amounts(slot, extra, level, base_level, noise, daily_days)
    return Resources(person=person, version=version, payer=payer, period=period, kind=kind, amount=amount)
