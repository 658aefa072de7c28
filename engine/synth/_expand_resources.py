"""The Numba kernel drawing the monthly resources of one block, with the cases the signals
stage looks for planted among them (engine/synth/_records.py, _signals.py); the way it draws
is _expand.py's (the block's Generator inside the loops)."""

from __future__ import annotations

import numpy as np
from numba import njit

from nirlink.kernels._dates import civil_month, days_from_civil

from ._expand import _MINIMUM, _P_HEALTH, _P_PENSION, _P_UNEMPLOYMENT, _employer, _integer

__all__ = ["draw_resources"]


@njit(nogil=True, cache=True)
def draw_resources(rng, first_month, n_months, smic_month, death_ordinal, lo, hi, py_start, py_employer,
                   py_version, py_level, retire_year, level_base, rows_per_person, n_employers, q, first_version,
                   drop_pension, death_month, dead_months, top_up, yearly_ceiling):
    """The monthly resources of the persons of a block (model: _records.py), grouped by person
    then month: per person-month the payments owed (a salary from the year's main employer, a
    base and a complementary pension past the retirement year, an unemployment benefit in 70%
    of the idle months of a career), then the extras (a daily allowance or a second salary).

    The planted cases of the signals stage (engine/synth/_signals.py, ``planting_plan``)
    are made with the rows, each person's after their own rows: no base pension for the
    ``drop_pension`` persons; the last payment repeated ``dead_months[i]`` months after the
    ``death_month[i]`` (absolute month index) of a person who has rows; and for the ``top_up``
    persons whose income over the window's last 12 months is below ``yearly_ceiling``, a
    minimum benefit each of those months, after the month's rows, up to a twelfth of it.

    Returns the rows (person, version, payer, period, kind, amount) and the new identity
    versions (second salaries' employers), numbered from ``first_version``."""
    n = lo.shape[0]
    n_pm = n * n_months
    status = np.zeros(n_pm, np.int8)  # 1 employed, 2 retired, 3 unemployed, 0 none
    period = np.empty(n_months, np.int64)
    for m in range(n_months):
        month = first_month + m
        period[m] = days_from_civil(month // 12, month % 12 + 1, 1)
    has_years = py_employer.shape[0] > 0
    base_rows = 0
    k = 0
    for i in range(n):
        for m in range(n_months):
            y = (first_month + m) // 12
            if death_ordinal[i] < 0 or period[m] <= death_ordinal[i]:
                if lo[i] <= y <= hi[i]:
                    if has_years:
                        if py_employer[py_start[i] + y - lo[i]] >= 0:
                            status[k] = 1
                            base_rows += 1
                        elif rng.random() < 0.7:
                            status[k] = 3
                            base_rows += 1
                elif y >= retire_year[i]:
                    status[k] = 2
                    base_rows += 2
            k += 1
    target = rows_per_person * n
    if base_rows > target:
        # more monthly income than asked for: drop whole person-months (missing declarations)
        keep = target / base_rows
        base_rows = 0
        for k in range(n_pm):
            if status[k]:
                if rng.random() < keep:
                    base_rows += 2 if status[k] == 2 else 1
                else:
                    status[k] = 0
    active = 0
    for k in range(n_pm):
        active += status[k] > 0
    lam = max(0.0, (target - base_rows) / max(active, 1))
    extra = np.zeros(n_pm, np.int64)
    n_rows = base_rows
    for k in range(n_pm):
        if status[k]:
            extra[k] = rng.poisson(lam)
            n_rows += extra[k]
    n_new_rows = n_rows - base_rows
    for i in range(n):
        n_rows += (6 if dead_months[i] > 0 else 0) + (12 if top_up[i] else 0)
    person = np.empty(n_rows, np.int32)
    version = np.empty(n_rows, np.int64)
    payer = np.empty(n_rows, np.int64)
    day = np.empty(n_rows, np.int32)
    kind = np.empty(n_rows, np.int8)
    amount = np.empty(n_rows, np.float64)
    v_person = np.empty(n_new_rows, np.int64)
    v_employer = np.empty(n_new_rows, np.int64)
    month_row = np.empty(n_months + 1, np.int64)  # the current person's first row of each month
    last_month = first_month + n_months - 1
    n_new = 0
    pool = n_employers
    r = 0
    k = 0
    for i in range(n):
        p0 = r
        for m in range(n_months):
            month_row[m] = r
            st = status[k]
            if st == 0:
                k += 1
                continue
            base = smic_month[m] * level_base[i]
            owed = 2 if st == 2 else 1
            for j in range(owed + extra[k]):
                if st == 2 and j == 0 and drop_pension[i]:  # non-take-up: no base pension
                    continue
                person[r] = i
                day[r] = period[m]
                if j < owed:
                    if st == 1:  # salary of the year's main employer
                        py = py_start[i] + (first_month + m) // 12 - lo[i]
                        payer[r] = py_employer[py]
                        version[r] = py_version[py]
                        kind[r] = 0
                        a = py_level[py] / 12 * rng.normal(1.0, 0.05)
                    elif st == 2:  # base pension, complementary pension
                        payer[r] = pool + _P_PENSION + j
                        version[r] = i * 4 + _P_PENSION + j
                        kind[r] = 1 + j
                        a = base * (0.45 if j == 0 else 0.2) * rng.normal(1.0, 0.05)
                    else:  # unemployment benefit
                        payer[r] = pool + _P_UNEMPLOYMENT
                        version[r] = i * 4 + _P_UNEMPLOYMENT
                        kind[r] = 3
                        a = base * 0.57 * rng.normal(1.0, 0.05)
                elif rng.random() < 0.6:  # daily allowance: half the base level a day, 3-30 days
                    payer[r] = pool + _P_HEALTH
                    version[r] = i * 4 + _P_HEALTH
                    kind[r] = 4
                    a = base / 30 * 0.5 * _integer(rng, 3, 31)
                else:  # a second salary, from its own employer
                    emp = _employer(rng, n_employers, q)
                    payer[r] = emp
                    version[r] = first_version + n_new
                    v_person[n_new] = i
                    v_employer[n_new] = emp
                    n_new += 1
                    kind[r] = 0
                    a = base * 0.25 * rng.normal(1.0, 0.05)
                amount[r] = np.rint(max(a, 1.0) * 100.0) / 100.0
                r += 1
            k += 1
        month_row[n_months] = r
        if dead_months[i] > 0 and r > p0:  # income after death: the last payment, repeated
            src = r - 1
            for t in range(dead_months[i]):
                mm = death_month[i] + 1 + t
                person[r], version[r], payer[r], kind[r], amount[r] = i, version[src], payer[src], kind[src], amount[src]
                day[r] = days_from_civil(mm // 12, mm % 12 + 1, 1)
                r += 1
        if top_up[i]:
            r = _top_up(i, r, month_row[min(max(n_months - 12, 0), n_months)], last_month, yearly_ceiling, pool,
                        person, version, payer, day, kind, amount)
    return ((person[:r], version[:r], payer[:r], day[:r], kind[:r], amount[:r]),
            (v_person[:n_new], v_employer[:n_new]))


@njit(nogil=True, cache=True)
def _top_up(i, r, w0, last_month, yearly_ceiling, pool, person, version, payer, day, kind, amount):
    """The minimum benefit of person ``i`` whose rows of the last 12 months are ``w0 .. r``
    (in month order): if their sum is below the ceiling, one row per month after that month's
    rows, topping it up to a twelfth of the ceiling (at least 1 EUR). Returns the new end."""
    income = 0.0
    for t in range(w0, r):
        income += amount[t]
    if not income < yearly_ceiling:
        return r
    count = r - w0
    t_version = version[w0:r].copy()
    t_payer = payer[w0:r].copy()
    t_day = day[w0:r].copy()
    t_kind = kind[w0:r].copy()
    t_amount = amount[w0:r].copy()
    w = w0
    t = 0
    for mm in range(last_month - 11, last_month + 1):
        paid = 0.0
        while t < count and civil_month(np.int64(t_day[t])) == mm:
            person[w], version[w], payer[w], day[w], kind[w], amount[w] = (i, t_version[t], t_payer[t], t_day[t],
                                                                          t_kind[t], t_amount[t])
            paid += t_amount[t]
            w += 1
            t += 1
        person[w], version[w], payer[w], kind[w] = i, i * 4 + _P_PENSION, pool + _P_PENSION, _MINIMUM
        day[w] = days_from_civil(mm // 12, mm % 12 + 1, 1)
        amount[w] = np.rint(max(yearly_ceiling / 12 - paid, 1.0) * 100.0) / 100.0
        w += 1
    return w
