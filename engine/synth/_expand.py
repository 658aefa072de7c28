"""Numba kernels expanding person-years and person-months into rows (engine/synth/_records.py).

The random draws stay in numpy, in the same order and sizes as the vectorised model drew
them; these kernels only do the deterministic part (repeat, gather, select, calendar
arithmetic) in one pass over the rows instead of dozens of numpy temporaries, so a seed
gives the same values as the vectorised code did.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from nirlink.kernels._dates import days_from_civil

__all__ = ["career_rows", "career_amounts", "resource_grid", "resource_rows"]


@njit(nogil=True, cache=True)
def _month_start(year, month):
    """Days since 1970-01-01 of the first day of (year, month); month may be 13 (next year)."""
    total = year * 12 + month - 1
    return days_from_civil(total // 12, total % 12 + 1, 1)


@njit(nogil=True, cache=True)
def career_rows(c_prev, c_gap, c_main, c_total, py_person, py_year, s_month, g_end, main_from, last_month,
                spell_emp, spell_version, prev_spell, py_emp, py_spell_version, unemp_employer, unemp_payer):
    """Rows of the person-years: slot 0 previous employer, 1 unemployment gap, 2 main
    employer, 3 extra (start, end, employer, version filled later by ``career_extras``)."""
    n_py = c_total.shape[0]
    n_rows = 0
    for i in range(n_py):
        n_rows += c_total[i]
    row_py = np.empty(n_rows, np.int64)
    slot = np.empty(n_rows, np.int8)
    person = np.empty(n_rows, np.int64)
    year = np.empty(n_rows, np.int64)
    start = np.empty(n_rows, np.int64)
    end = np.empty(n_rows, np.int64)
    kind = np.zeros(n_rows, np.int8)
    employer = np.empty(n_rows, np.int64)
    version = np.empty(n_rows, np.int64)
    r = 0
    for i in range(n_py):
        cp, cg, cm = c_prev[i], c_gap[i], c_main[i]
        y, p = py_year[i], py_person[i]
        sm = s_month[i]
        ps = prev_spell[i]
        for j in range(c_total[i]):
            row_py[r] = i
            person[r] = p
            year[r] = y
            if j < cp:
                s, m_from, m_to = 0, 1, sm - 1
                employer[r] = spell_emp[ps]
                version[r] = spell_version[ps]
            elif j < cp + cg:
                s, m_from, m_to = 1, sm, g_end[i]
                kind[r] = 1
                employer[r] = unemp_employer
                version[r] = p * 4 + unemp_payer
            elif j < cp + cg + cm:
                s, m_from, m_to = 2, main_from[i], last_month[i]
                employer[r] = py_emp[i]
                version[r] = py_spell_version[i]
            else:
                s, m_from, m_to = 3, 1, 12
                employer[r] = py_emp[i]
                version[r] = py_spell_version[i]
            slot[r] = s
            start[r] = _month_start(y, m_from)
            end[r] = _month_start(y, m_to + 1) - 1
            r += 1
    return row_py, slot, person, year, start, end, kind, employer, version


@njit(nogil=True, cache=True)
def career_extras(ex_idx, ek, length, u_start, year, start, end, kind):
    """Extra rows: a period of ``length`` days at a uniform place inside the year."""
    for k in range(ex_idx.shape[0]):
        r = ex_idx[k]
        y0 = _month_start(year[r], 1)
        y1 = _month_start(year[r], 13) - 1
        e_start = y0 + np.int64(np.floor(u_start[k] * max(y1 - y0 + 1 - length[k], 1)))
        start[r] = e_start
        end[r] = min(e_start + length[k] - 1, y1)
        kind[r] = ek[k]


@njit(nogil=True, cache=True)
def career_amounts(row_py, slot, kind, start, end, py_level):
    """Days of each row; gross salary (level x days / 365, x 0.3 for second jobs, rounded to
    cents; NaN for other kinds)."""
    n = row_py.shape[0]
    days = np.empty(n, np.int16)
    gross = np.empty(n, np.float64)
    for r in range(n):
        d = end[r] - start[r] + 1
        days[r] = d
        if kind[r] == 0:
            g = py_level[row_py[r]] * d / 365.0
            if slot[r] == 3:
                g *= 0.3
            gross[r] = np.rint(g * 100.0) / 100.0
        else:
            gross[r] = np.nan
    return days, gross


@njit(nogil=True, cache=True)
def resource_grid(n, first_month, n_months, death, lo, hi, py_start, py_employer, retire_year, u_unemployed):
    """Person-month grid (person-major): monthly rows owed (``c_base``: 1 salary, 2 pensions,
    1 unemployment benefit), the status (1 employed, 2 retired, 3 unemployed, 0 none) and
    the person-year of each person-month; ``u_unemployed`` < 0.7 makes an idle month paid."""
    n_pm = n * n_months
    c_base = np.zeros(n_pm, np.int64)
    status = np.zeros(n_pm, np.int8)
    py = np.zeros(n_pm, np.int64)
    has_years = py_employer.shape[0] > 0
    k = 0
    for i in range(n):
        for m in range(n_months):
            month = first_month + m
            y = month // 12
            period = days_from_civil(y, month % 12 + 1, 1)
            alive = death[i] < 0 or period <= death[i]
            in_career = lo[i] <= y <= hi[i]
            if in_career:
                py[k] = py_start[i] + (y - lo[i])
            if alive:
                if in_career and has_years:
                    if py_employer[py[k]] >= 0:
                        status[k] = 1
                        c_base[k] = 1
                    elif u_unemployed[k] < 0.7:
                        status[k] = 3
                        c_base[k] = 1
                elif not in_career and y >= retire_year[i]:
                    status[k] = 2
                    c_base[k] = 2
            k += 1
    return c_base, status, py


@njit(nogil=True, cache=True)
def resource_rows(c_base, c_total, status, py, n_months, first_month, smic_month, level_base, py_level,
                  py_employer, py_spell_version, pool):
    """Rows of the person-months: slot 0 salary, 1 pension, 2 complementary pension, 3
    unemployment benefit, 4 extra (payer and version set later); the monthly level (from the
    person-year's salary for salaries) and the person's base level (SMIC x multiplier)."""
    n_pm = c_total.shape[0]
    n_rows = 0
    for k in range(n_pm):
        n_rows += c_total[k]
    person = np.empty(n_rows, np.int32)
    period = np.empty(n_rows, np.int32)
    slot = np.empty(n_rows, np.int8)
    payer = np.zeros(n_rows, np.int64)
    version = np.zeros(n_rows, np.int64)
    level = np.empty(n_rows, np.float64)
    base_level = np.empty(n_rows, np.float64)
    has_years = py_employer.shape[0] > 0
    r = 0
    for k in range(n_pm):
        i = k // n_months
        m = k - i * n_months
        month = first_month + m
        day = days_from_civil(month // 12, month % 12 + 1, 1)
        base = smic_month[m] * level_base[i]
        st = status[k]
        for j in range(c_total[k]):
            person[r] = i
            period[r] = day
            base_level[r] = base
            level[r] = base
            if j < c_base[k]:
                if st == 1:
                    s = 0
                    if has_years:
                        payer[r] = py_employer[py[k]]
                        version[r] = py_spell_version[py[k]]
                        level[r] = py_level[py[k]] / 12
                elif st == 2:
                    s = 1 + (j == 1)
                else:
                    s = 3
                if s > 0:
                    payer[r] = pool + s - 1  # P_PENSION, P_COMPLEMENTARY, P_UNEMPLOYMENT
                    version[r] = i * 4 + s - 1
            else:
                s = 4
            slot[r] = s
            r += 1
    return person, period, slot, payer, version, level, base_level


@njit(nogil=True, cache=True)
def resource_amounts(slot, extra, level, base_level, noise, daily_days):
    """Amounts: level x factor of the slot x noise; extras: a daily allowance (``extra`` 1,
    half the base level a day for ``daily_days`` days) or a second salary (``extra`` 2, a
    quarter of the base level x noise); at least 1 EUR, rounded to cents."""
    factors = np.array([1.0, 0.45, 0.2, 0.57, 0.0])
    n = slot.shape[0]
    amount = np.empty(n, np.float64)
    for r in range(n):
        if extra[r] == 1:
            a = base_level[r] / 30 * 0.5 * daily_days[r]
        elif extra[r] == 2:
            a = base_level[r] * 0.25 * noise[r]
        else:
            a = level[r] * factors[slot[r]] * noise[r]
        amount[r] = np.rint(max(a, 1.0) * 100.0) / 100.0
    return amount
