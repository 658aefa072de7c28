"""Numba kernels drawing the careers of one block (engine/synth/_records.py), and the calendar
and draw helpers they share with the resources' kernel (_expand_resources.py).

Each kernel takes the block's ``np.random.Generator`` and draws from it inside its loops
(Numba implements the Generator's methods, with numpy's algorithms), in one pass over
persons, person-years or person-months, then one over the rows it emits. The values a seed
gives follow from the order of the draws in these loops: deterministic per seed and block,
whatever the worker count.

What was tried before and why it went: the random draws in numpy, vectorised over persons,
person-years and person-months (in the order of the first, numpy-only model, so that a seed
kept its values), then kernels expanding them into rows (gathers from a dozen drawn arrays per
row), and the planted cases merged into every column afterwards. Each draw was a temporary
the size of the rows and the gathers cost more than the arithmetic: ~0.84 s of CPU for the
careers and resources of a 20,000-person block (2.5M rows), against ~0.2 s for these kernels
on the same (loaded) machine. Numba's ``Generator.integers`` costs ~65 ns a draw, ``random``
~8 ns: uniform integers come from ``_integer``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from nirlink.kernels._dates import civil_month, days_from_civil

__all__ = ["draw_careers", "RETIRE_AGES"]

RETIRE_AGES = np.array([60, 61, 62, 62, 63, 64, 64, 65, 67], np.int64)
# career kinds (_records.CAREER_KINDS) and payers (_records.PAYERS)
_SALARY, _UNEMPLOYMENT, _SICKNESS, _MATERNITY = 0, 1, 2, 3
_P_PENSION, _P_COMPLEMENTARY, _P_UNEMPLOYMENT, _P_HEALTH = 0, 1, 2, 3
_MINIMUM = 5  # minimum_old_age_benefit in _records.RESOURCE_KINDS


@njit(nogil=True, cache=True)
def _month_start(year, month):
    """Days since 1970-01-01 of the first day of (year, month); month may be 13 (next year)."""
    total = year * 12 + month - 1
    return days_from_civil(total // 12, total % 12 + 1, 1)


@njit(nogil=True, cache=True)
def _integer(rng, low, high):
    """A uniform integer in [low, high): from one uniform double, ~8 ns, where Numba's
    ``Generator.integers`` takes ~65 ns a draw (measured on the benchmark machine)."""
    return low + np.int64(rng.random() * (high - low))


@njit(nogil=True, cache=True)
def _employer(rng, n_employers, q):
    """An employer index with a Zipf-like law p(r) ~ 1 / (r + q), by inverting its continuous
    CDF (no table, so the pool can hold millions of employers)."""
    x = q * ((n_employers + q) / q) ** rng.random() - q
    return min(np.int64(x), n_employers - 1)


@njit(nogil=True, cache=True)
def draw_careers(rng, birth_year, sex, death_ordinal, smic_year, first_year, last_year, rows_per_person,
                 n_employers, q, first_version):
    """The careers of the persons of a block (model: _records.py).

    ``smic_year[y - first_year]``: the annual SMIC (35 h) of each career year. New identity
    versions (employment spells, short jobs) are numbered from ``first_version``.
    Returns (rows, person-years, persons, new versions) as tuples of arrays."""
    n = birth_year.shape[0]
    # --- persons: first and last career years, salary level
    lo = np.empty(n, np.int64)
    hi = np.empty(n, np.int64)
    retire_year = np.empty(n, np.int64)
    level_base = np.empty(n, np.float64)
    py_start = np.empty(n, np.int64)
    death_cut = np.empty(n, np.int64)  # first day of the month after the death month
    n_py = 0
    for i in range(n):
        by = np.int64(birth_year[i])
        start_age = min(max(16 + np.floor(rng.gamma(2.0, 2.2)), 16), 30)
        retire_age = RETIRE_AGES[_integer(rng, 0, RETIRE_AGES.shape[0])]
        never = rng.random() < 0.05
        level_base[i] = np.exp(rng.normal(np.log(1.4), 0.45))
        d = death_ordinal[i]
        death_y = 10_000
        death_cut[i] = 1 << 40
        if d >= 0:
            dm = civil_month(np.int64(d))
            death_y = dm // 12
            death_cut[i] = _month_start(death_y, dm % 12 + 2)
        lo[i] = max(by + np.int64(start_age), first_year)
        hi[i] = min(by + retire_age - 1, death_y, last_year)
        if never:
            hi[i] = lo[i] - 1
        retire_year[i] = by + retire_age
        py_start[i] = n_py
        n_py += max(hi[i] - lo[i] + 1, 0)

    # --- person-years: employer spells (a switch with probability 0.15 a year, an
    # unemployment gap in a third of them), inactive years, part time, the months of the year
    py_person = np.empty(n_py, np.int64)
    py_year = np.empty(n_py, np.int64)
    py_employer = np.empty(n_py, np.int64)  # main employer, -1 in an inactive year
    py_version = np.empty(n_py, np.int64)  # identity version of the main employer's spell
    py_prev = np.empty(n_py, np.int64)  # the previous spell's employer (switch years)
    py_prev_version = np.empty(n_py, np.int64)
    py_level = np.empty(n_py, np.float64)
    py_flags = np.zeros(n_py, np.int8)  # 1 previous-employer row, 2 gap row, 4 main row
    py_months = np.empty((n_py, 4), np.int8)  # switch month, gap end, main from, last month
    py_extra = np.zeros(n_py, np.int64)
    new_person = np.empty(n_py, np.int64)  # new versions: spells now, short jobs later
    new_employer = np.empty(n_py, np.int64)
    n_new = 0
    base_rows = 0
    active = 0
    k = 0
    for i in range(n):
        emp, ver = -1, -1
        n_years = max(hi[i] - lo[i] + 1, 0)
        for t in range(n_years):
            y = lo[i] + t
            first, last = t == 0, t == n_years - 1
            switch = first or rng.random() < 0.15
            inactive = (not first) and rng.random() < 0.04
            gap = switch and (not first) and rng.random() < 0.35
            py_person[k] = i
            py_year[k] = y
            py_prev[k] = emp
            py_prev_version[k] = ver
            if switch:
                emp = _employer(rng, n_employers, q)
                ver = first_version + n_new
                new_person[n_new] = i
                new_employer[n_new] = emp
                n_new += 1
            part = 1.0
            if rng.random() < 0.12:
                part = rng.uniform(0.5, 0.8)
            py_level[k] = smic_year[y - first_year] * level_base[i] * 1.015 ** t * part
            s_month = _integer(rng, 2, 13)
            g_end = min(s_month + _integer(rng, 0, 4), 12)
            first_month = _integer(rng, 1, 13) if first else 1
            last_month = _integer(rng, 1, 13) if (last and y < last_year) else 12
            main_from = first_month
            if switch and not first:
                main_from = g_end + 1 if gap else s_month
            py_months[k, 0] = s_month
            py_months[k, 1] = g_end
            py_months[k, 2] = min(main_from, last_month)
            py_months[k, 3] = last_month
            flags = 0
            if switch and not first and not inactive:
                flags |= 1
            if gap:
                flags |= 2
            if not inactive:
                flags |= 4
                active += 1
            py_flags[k] = flags
            base_rows += (flags & 1) + ((flags >> 1) & 1) + ((flags >> 2) & 1)
            py_employer[k] = -1 if inactive else emp
            py_version[k] = ver
            k += 1
    # extra rows (a second short job, sickness, maternity, unemployment) on active years,
    # a Poisson number whose mean reaches the configured rows per person
    lam = max(0.0, (rows_per_person * n - base_rows) / max(active, 1))
    n_rows = base_rows
    for k in range(n_py):
        if py_flags[k] & 4:
            py_extra[k] = rng.poisson(lam)
            n_rows += py_extra[k]

    # --- rows, grouped by person then year; none starting after the death month
    person = np.empty(n_rows, np.int32)
    version = np.empty(n_rows, np.int64)
    employer = np.empty(n_rows, np.int64)
    year = np.empty(n_rows, np.int16)
    start = np.empty(n_rows, np.int32)
    end = np.empty(n_rows, np.int32)
    kind = np.zeros(n_rows, np.int8)
    gross = np.empty(n_rows, np.float64)
    days = np.empty(n_rows, np.int16)
    short_person = np.empty(n_rows - base_rows, np.int64)
    short_employer = np.empty(n_rows - base_rows, np.int64)
    n_short = 0
    r = 0
    for k in range(n_py):
        i = py_person[k]
        y = py_year[k]
        flags = py_flags[k]
        y0 = _month_start(y, 1)
        y1 = _month_start(y, 13) - 1
        for slot in range(3 + py_extra[k]):
            if slot < 3 and not flags & (1 << slot):
                continue
            if slot == 0:  # the previous employer, until the switch
                s = y0
                e = _month_start(y, py_months[k, 0]) - 1
                kd, emp, ver = _SALARY, py_prev[k], py_prev_version[k]
            elif slot == 1:  # unemployment between the two
                s = _month_start(y, py_months[k, 0])
                e = _month_start(y, py_months[k, 1] + 1) - 1
                kd, emp, ver = _UNEMPLOYMENT, n_employers + _P_UNEMPLOYMENT, i * 4 + _P_UNEMPLOYMENT
            elif slot == 2:  # the main employer
                s = _month_start(y, py_months[k, 2])
                e = _month_start(y, py_months[k, 3] + 1) - 1
                kd, emp, ver = _SALARY, py_employer[k], py_version[k]
            else:  # an extra period somewhere in the year
                u = rng.random()
                kd = _SALARY if u < 0.55 else _SICKNESS if u < 0.85 else _MATERNITY if u < 0.95 else _UNEMPLOYMENT
                age = y - birth_year[i]
                if kd == _MATERNITY and not (sex[i] == 2 and 20 <= age <= 42):
                    kd = _SICKNESS
                if kd == _SALARY:
                    length = _integer(rng, 10, 120)
                elif kd == _MATERNITY:
                    length = 112
                else:
                    length = _integer(rng, 10, 200)
                s = y0 + np.int64(np.floor(rng.random() * max(y1 - y0 + 1 - length, 1)))
                e = min(s + length - 1, y1)
                if kd == _SALARY:  # a short job: its own employer and identity version
                    emp = _employer(rng, n_employers, q)
                    ver = -1  # numbered below, after the spells
                elif kd == _UNEMPLOYMENT:
                    emp, ver = n_employers + _P_UNEMPLOYMENT, i * 4 + _P_UNEMPLOYMENT
                else:
                    emp, ver = n_employers + _P_HEALTH, i * 4 + _P_HEALTH
            if s >= death_cut[i]:  # starts after the death month
                continue
            if ver == -1:
                short_person[n_short] = i
                short_employer[n_short] = emp
                ver = first_version + n_new + n_short
                n_short += 1
            d = e - s + 1
            person[r] = i
            version[r] = ver
            employer[r] = emp
            year[r] = y
            start[r] = s
            end[r] = e
            kind[r] = kd
            days[r] = d
            if kd == _SALARY:
                g = py_level[k] * d / 365.0
                if slot >= 3:
                    g *= 0.3
                gross[r] = np.rint(g * 100.0) / 100.0
            else:
                gross[r] = np.nan
            r += 1
    v_person = np.concatenate((new_person[:n_new], short_person[:n_short]))
    v_employer = np.concatenate((new_employer[:n_new], short_employer[:n_short]))
    rows = (person[:r], version[:r], employer[:r], year[:r], start[:r], end[:r], kind[:r], gross[:r], days[:r])
    return rows, (py_start, py_employer, py_version, py_level), (lo, hi, retire_year, level_base), (v_person, v_employer)
