"""Synthetic careers and monthly resources of the persons of one block.

Everything is vectorised over person-years and person-months; rows come out grouped by
person (then year or month), as a pension fund's extracts usually are.

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

__all__ = ["Careers", "Resources", "make_careers", "make_resources", "CAREER_KINDS", "RESOURCE_KINDS", "PAYERS"]

CAREER_KINDS = ("salary", "unemployment", "sickness", "maternity")
RESOURCE_KINDS = ("salary", "pension", "complementary_pension", "unemployment_benefit", "daily_allowance",
                  "minimum_old_age_benefit")
# Payers other than employers; they take the employer indices M .. M+3 of the pool.
PAYERS = ("pension_fund", "complementary_fund", "unemployment_agency", "health_insurance")
P_PENSION, P_COMPLEMENTARY, P_UNEMPLOYMENT, P_HEALTH = range(4)
HOURS_PER_YEAR = 1820.0  # 35 h x 52 weeks


def _month_start(year, month):
    """Days since 1970-01-01 of the first day of (year, month); month may be 13 (next year)."""
    m = (np.asarray(year, np.int64) - 1970) * 12 + (np.asarray(month, np.int64) - 1)
    return m.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)


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
    n_rows = int(c_total.sum())
    row_py = np.repeat(np.arange(n_py), c_total)
    row_start = np.concatenate([[0], np.cumsum(c_total)[:-1]])
    j = np.arange(n_rows) - row_start[row_py]
    cp, cg, cm = c_prev[row_py], c_gap[row_py], c_main[row_py]
    slot = np.where(j < cp, 0, np.where(j < cp + cg, 1, np.where(j < cp + cg + cm, 2, 3)))

    year = py_year[row_py]
    person = py_person[row_py]
    # months: switch month s (2-12); the gap lasts 1-4 months after it
    s_month = rng.integers(2, 13, n_py)
    g_end = np.minimum(s_month + rng.integers(0, 4, n_py), 12)
    first_month = np.where(first_py, rng.integers(1, 13, n_py), 1)
    last_month = np.where(last_py & (py_year < p.last_career_year), rng.integers(1, 13, n_py), 12)
    main_from = np.where(switch & ~first_py, np.where(gap, g_end + 1, s_month), first_month)
    main_from = np.minimum(main_from, last_month)
    sm, ge, mf, lm = s_month[row_py], g_end[row_py], main_from[row_py], last_month[row_py]
    m_from = np.select([slot == 0, slot == 1, slot == 2], [np.ones_like(sm), sm, mf], 1)
    m_to = np.select([slot == 0, slot == 1, slot == 2], [sm - 1, ge, lm], 12)
    start = _month_start(year, m_from)
    end = _month_start(year, m_to + 1) - 1

    # extra rows: a short period inside the year
    extra = slot == 3
    ne = int(extra.sum())
    u = rng.random(ne)
    women = persons.sex[person[extra]] == 2
    age = year[extra] - by[person[extra]]
    ek = np.where(u < 0.55, 0, np.where(u < 0.85, 2, np.where(u < 0.95, 3, 1)))  # salary/sickness/maternity/unemp
    ek = np.where((ek == 3) & ~(women & (age >= 20) & (age <= 42)), 2, ek)
    length = np.where(ek == 0, rng.integers(10, 120, ne), np.where(ek == 3, 112, rng.integers(10, 200, ne)))
    y0 = _month_start(year[extra], 1)
    y1 = _month_start(year[extra], 13) - 1
    e_start = y0 + np.floor(rng.random(ne) * np.maximum(y1 - y0 + 1 - length, 1)).astype(np.int64)
    start[extra] = e_start
    end[extra] = np.minimum(e_start + length - 1, y1)

    kind = np.select([slot == 1, slot == 3], [1, 0], 0).astype(np.int8)
    kind[extra] = ek
    days = (end - start + 1).astype(np.int64)

    # declarants and identity versions
    employer = np.where(slot == 0, spell_emp[prev_spell[row_py]] if n_py else 0, py_emp[row_py] if n_py else 0)
    version = np.where(slot == 0, spell_version[prev_spell[row_py]] if n_py else 0,
                       py_spell_version[row_py] if n_py else 0)
    gap_rows = slot == 1
    employer[gap_rows] = n_employers + P_UNEMPLOYMENT
    version[gap_rows] = versions.payer(person[gap_rows], P_UNEMPLOYMENT)
    ex_idx = np.flatnonzero(extra)
    short = ex_idx[ek == 0]
    short_emp = _employers(rng, len(short), n_employers)
    employer[short] = short_emp
    version[short] = versions.add(person[short], short_emp)
    for kcode, payer in ((1, P_UNEMPLOYMENT), (2, P_HEALTH), (3, P_HEALTH)):
        rows = ex_idx[ek == kcode]
        employer[rows] = n_employers + payer
        version[rows] = versions.payer(person[rows], payer)

    level = py_level[row_py]
    gross = np.where(kind == 0, level * days / 365.0, np.nan)
    gross[extra & (kind == 0)] *= 0.3  # second jobs pay less
    gross = np.round(gross, 2)

    return Careers(
        person=person.astype(np.int32), version=version, employer=employer, year=year.astype(np.int16),
        start=start.astype(np.int32), end=end.astype(np.int32), kind=kind, gross=gross,
        days=days.astype(np.int16), py_person=py_person, py_year=py_year,
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
    m_year = months // 12
    # person-month grid
    pm_person = np.repeat(np.arange(n), n_months)
    pm_month = np.tile(months, n)
    pm_year = np.tile(m_year, n)
    period = ((pm_month - 1970 * 12).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64))
    alive = (persons.death_ordinal[pm_person] < 0) | (period <= persons.death_ordinal[pm_person])

    lo, hi = careers.lo[pm_person], careers.hi[pm_person]
    in_career = (pm_year >= lo) & (pm_year <= hi)
    py = np.where(in_career, careers.py_start[pm_person] + (pm_year - lo), 0)
    has_py = in_career & (len(careers.py_person) > 0)
    emp = np.where(has_py, careers.py_employer[py] if len(careers.py_person) else -1, -1)
    employed = has_py & (emp >= 0) & alive
    retired = ~in_career & (pm_year >= careers.retire_year[pm_person]) & alive
    idle = has_py & (emp < 0) & alive
    unemployed = idle & (rng.random(len(pm_person)) < 0.7)

    c_base = employed.astype(np.int64) + 2 * retired + unemployed
    base_rows = int(c_base.sum())
    target = p.resource_rows_per_person * n
    if base_rows > target:
        # more monthly income than asked for: drop whole person-months (missing declarations)
        c_base = np.where(rng.random(len(c_base)) < target / base_rows, c_base, 0)
        employed, retired, unemployed = employed & (c_base > 0), retired & (c_base > 0), unemployed & (c_base > 0)
        base_rows = int(c_base.sum())
    active = employed | retired | unemployed
    lam = max(0.0, (target - base_rows) / max(int(active.sum()), 1))
    c_extra = np.where(active, rng.poisson(lam, len(pm_person)), 0)
    c_total = c_base + c_extra
    n_rows = int(c_total.sum())
    row_pm = np.repeat(np.arange(len(pm_person)), c_total)
    j = np.arange(n_rows) - np.concatenate([[0], np.cumsum(c_total)[:-1]])[row_pm]
    person = pm_person[row_pm]
    r_emp, r_ret = employed[row_pm], retired[row_pm]
    # slot: 0 salary | 1 pension | 2 complementary | 3 unemployment benefit | 4 extra
    slot = np.where(j < c_base[row_pm],
                    np.where(r_emp, 0, np.where(r_ret, 1 + (j == 1), 3)), 4)
    kind = np.array([0, 1, 2, 3, 0], np.int8)[slot]
    payer = np.zeros(n_rows, np.int64)
    version = np.zeros(n_rows, np.int64)
    pyr = py[row_pm]
    sal = slot == 0
    if len(careers.py_person):
        payer[sal] = careers.py_employer[pyr[sal]]
        version[sal] = careers.py_spell_version[pyr[sal]]
    for s, pay in ((1, P_PENSION), (2, P_COMPLEMENTARY), (3, P_UNEMPLOYMENT)):
        rows = slot == s
        payer[rows] = n_employers + pay
        version[rows] = versions.payer(person[rows], pay)
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
    smic_month = yt.smic_hourly[yt.index(pm_year[row_pm], what="resource year")] * HOURS_PER_YEAR / 12
    base_level = smic_month * careers.level_base[person]
    level = np.where(sal & (len(careers.py_person) > 0),
                     careers.py_level[pyr] / 12 if len(careers.py_person) else 0.0, base_level)
    noise = 1 + rng.normal(0, 0.05, n_rows)
    factor = np.array([1.0, 0.45, 0.2, 0.57, 0.0])[slot]
    amount = level * factor * noise
    amount[d_rows] = base_level[d_rows] / 30 * 0.5 * rng.integers(3, 31, len(d_rows))
    amount[s_rows] = base_level[s_rows] * 0.25 * noise[s_rows]
    amount = np.round(np.maximum(amount, 1.0), 2)
    return Resources(
        person=person.astype(np.int32), version=version, payer=payer,
        period=period[row_pm].astype(np.int32), kind=kind, amount=amount,
    )
