"""The synthetic generator's Numba kernels against vectorised numpy references (the way the
generator computed the same rows before the kernels)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from nirlink.engine.synth._expand import (
    _month_start,
    career_amounts,
    career_rows,
    resource_amounts,
    resource_grid,
    resource_rows,
)
from nirlink.engine.synth._signals import _in_order, _insert_points, _merge


def _np_month_start(year, month):
    m = (np.asarray(year, np.int64) - 1970) * 12 + (np.asarray(month, np.int64) - 1)
    return m.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)


@given(year=st.integers(1850, 2150), month=st.integers(1, 13))
def test_month_start_matches_numpy_calendar(year, month):
    assert _month_start(year, month) == _np_month_start(year, month)


def _reference_career_rows(c_prev, c_gap, c_main, c_total, py_person, py_year, s_month, g_end, main_from,
                           last_month, spell_emp, spell_version, prev_spell, py_emp, py_spell_version, unemp_emp,
                           unemp_payer):
    n_py, n_rows = len(c_total), int(c_total.sum())
    row_py = np.repeat(np.arange(n_py), c_total)
    j = np.arange(n_rows) - np.concatenate([[0], np.cumsum(c_total)[:-1]])[row_py]
    cp, cg, cm = c_prev[row_py], c_gap[row_py], c_main[row_py]
    slot = np.where(j < cp, 0, np.where(j < cp + cg, 1, np.where(j < cp + cg + cm, 2, 3)))
    year, person = py_year[row_py], py_person[row_py]
    sm, ge, mf, lm = s_month[row_py], g_end[row_py], main_from[row_py], last_month[row_py]
    m_from = np.select([slot == 0, slot == 1, slot == 2], [np.ones_like(sm), sm, mf], 1)
    m_to = np.select([slot == 0, slot == 1, slot == 2], [sm - 1, ge, lm], 12)
    employer = np.where(slot == 0, spell_emp[prev_spell[row_py]], py_emp[row_py])
    version = np.where(slot == 0, spell_version[prev_spell[row_py]], py_spell_version[row_py])
    employer[slot == 1] = unemp_emp
    version[slot == 1] = person[slot == 1] * 4 + unemp_payer
    return (row_py, slot, person, year, _np_month_start(year, m_from), _np_month_start(year, m_to + 1) - 1,
            (slot == 1).astype(np.int8), employer, version)


@given(seed=st.integers(0, 2**32 - 1), n_py=st.integers(0, 40))
def test_career_rows_match_the_vectorised_expansion(seed, n_py):
    rng = np.random.default_rng(seed)
    c_prev, c_gap, c_main = (rng.integers(0, 2, n_py) for _ in range(3))
    c_total = c_prev + c_gap + c_main + rng.integers(0, 4, n_py)
    s_month = rng.integers(2, 13, n_py)
    g_end = np.minimum(s_month + rng.integers(0, 4, n_py), 12)
    last_month = rng.integers(1, 13, n_py)
    main_from = np.minimum(rng.integers(1, 13, n_py), last_month)
    spell = rng.integers(0, 1000, (4, max(n_py, 1)))
    args = (c_prev, c_gap, c_main, c_total, rng.integers(0, 50, n_py), rng.integers(1990, 2026, n_py), s_month,
            g_end, main_from, last_month, spell[0], spell[1], rng.integers(0, max(n_py, 1), n_py), spell[2][:n_py],
            spell[3][:n_py], 77, 2)
    got = career_rows(*args)
    want = _reference_career_rows(*args)
    for g, w in zip(got, want):
        assert np.array_equal(g, w)


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 200))
def test_amounts_round_like_numpy(seed, n):
    rng = np.random.default_rng(seed)
    start = rng.integers(7000, 20000, n)
    end = start + rng.integers(0, 365, n)
    kind = rng.integers(0, 4, n).astype(np.int8)
    slot = rng.integers(0, 4, n).astype(np.int8)
    py_level = rng.lognormal(10, 1, 7)
    row_py = rng.integers(0, 7, n)
    days, gross = career_amounts(row_py, slot, kind, start, end, py_level)
    d = (end - start + 1).astype(np.int64)
    want = np.where(kind == 0, py_level[row_py] * d / 365.0, np.nan)
    want[(slot == 3) & (kind == 0)] *= 0.3
    assert np.array_equal(days, d.astype(np.int16))
    assert np.array_equal(gross, np.round(want, 2), equal_nan=True)

    rslot = rng.integers(0, 5, n).astype(np.int8)
    extra = np.where(rslot == 4, rng.integers(1, 3, n), 0).astype(np.int8)
    level, base, noise = rng.lognormal(7, 1, n), rng.lognormal(7, 1, n), 1 + rng.normal(0, 0.05, n)
    daily = rng.integers(3, 31, n)
    want = level * np.array([1.0, 0.45, 0.2, 0.57, 0.0])[rslot] * noise
    want[extra == 1] = (base / 30 * 0.5 * daily)[extra == 1]
    want[extra == 2] = (base * 0.25 * noise)[extra == 2]
    assert np.array_equal(resource_amounts(rslot, extra, level, base, noise, daily),
                          np.round(np.maximum(want, 1.0), 2))


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 60), k=st.integers(0, 15))
def test_planted_rows_merge_like_a_stable_sort(seed, n, k):
    rng = np.random.default_rng(seed)
    person = np.sort(rng.integers(0, 8, n)).astype(np.int32)
    period = np.zeros(n, np.int32)
    for p in np.unique(person):  # each person's rows in period order, periods repeating
        at = person == p
        period[at] = np.sort(rng.integers(17900, 17905, int(at.sum())))
    value = np.arange(n, dtype=np.int64)
    kept = np.flatnonzero(rng.random(n) < 0.8)
    new_person = rng.integers(0, 9, k).astype(np.int32)
    new_period = rng.integers(17898, 17907, k).astype(np.int32)
    order = np.lexsort((new_period, new_person))
    new_person, new_period, new_value = new_person[order], new_period[order], 1000 + np.arange(k)
    key = person.astype(np.int64) * 100_000 + period
    assert _in_order(person, period) and (n < 2 or not _in_order(person[::-1], period[::-1]) or len(set(key)) == 1)
    before = _insert_points(person, period, kept, new_person, new_period)
    assert np.array_equal(before, np.searchsorted(key[kept], new_person.astype(np.int64) * 100_000 + new_period,
                                                  side="right"))
    got = [_merge(a, kept, b, before, len(kept) == n) for a, b in
           ((person, new_person), (period, new_period), (value, new_value))]
    # the reference: a stable sort of the kept rows followed by the new ones
    all_p = np.concatenate([person[kept], new_person])
    all_d = np.concatenate([period[kept], new_period])
    ref = np.lexsort((all_d, all_p))
    assert np.array_equal(got[2], np.concatenate([value[kept], new_value])[ref])
    assert np.array_equal(got[0], all_p[ref]) and np.array_equal(got[1], all_d[ref])


def _reference_resource_grid(n, first, n_months, death, lo, hi, py_start, py_employer, retire_year, u):
    months = first + np.arange(n_months)
    pm_person = np.repeat(np.arange(n), n_months)
    pm_month, pm_year = np.tile(months, n), np.tile(months // 12, n)
    period = (pm_month - 1970 * 12).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    alive = (death[pm_person] < 0) | (period <= death[pm_person])
    plo, phi = lo[pm_person], hi[pm_person]
    in_career = (pm_year >= plo) & (pm_year <= phi)
    py = np.where(in_career, py_start[pm_person] + (pm_year - plo), 0)
    has_py = in_career & (len(py_employer) > 0)
    emp = np.where(has_py, py_employer[py] if len(py_employer) else -1, -1)
    employed = has_py & (emp >= 0) & alive
    retired = ~in_career & (pm_year >= retire_year[pm_person]) & alive
    unemployed = has_py & (emp < 0) & alive & (u < 0.7)
    status = np.select([employed, retired, unemployed], [1, 2, 3], 0)
    return employed.astype(np.int64) + 2 * retired + unemployed, status, np.where(in_career, py, 0)


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 12))
def test_resource_grid_and_rows_match_the_vectorised_expansion(seed, n):
    rng = np.random.default_rng(seed)
    first, n_months = 2019 * 12, 30
    lo = rng.integers(2015, 2023, n)
    hi = lo + rng.integers(-1, 6, n)  # hi < lo: no career year
    n_years = np.maximum(hi - lo + 1, 0)
    py_start = np.concatenate([[0], np.cumsum(n_years)[:-1]]).astype(np.int64)
    n_py = int(n_years.sum())
    py_employer = np.where(rng.random(n_py) < 0.2, -1, rng.integers(0, 50, n_py))
    death = np.where(rng.random(n) < 0.3, rng.integers(17800, 19500, n), -1)
    retire = rng.integers(2016, 2024, n)
    u = rng.random(n * n_months)
    args = (n, first, n_months, death, lo, hi, py_start, py_employer, retire, u)
    got = resource_grid(*args)
    want = _reference_resource_grid(*args)
    for g, w in zip(got, want):
        assert np.array_equal(g, w)

    c_base, status, py = got
    c_total = c_base + np.where(status > 0, rng.integers(0, 3, len(c_base)), 0)
    smic, level_base = rng.lognormal(7, 0.1, n_months), rng.lognormal(0, 0.3, max(n, 1))
    py_level, py_version = rng.lognormal(10, 0.5, n_py), rng.integers(0, 10**6, n_py)
    person, period, slot, payer, version, level, base = resource_rows(
        c_base, c_total, status, py, n_months, first, smic, level_base, py_level, py_employer, py_version, 1000)
    # the reference: one row per owed payment, then the extras, person-months in order
    row_pm = np.repeat(np.arange(len(c_total)), c_total)
    j = np.arange(len(row_pm)) - np.concatenate([[0], np.cumsum(c_total)[:-1]])[row_pm].astype(np.int64)
    st_, pm_person, m = status[row_pm], row_pm // n_months, row_pm % n_months
    want_slot = np.where(j < c_base[row_pm], np.where(st_ == 1, 0, np.where(st_ == 2, 1 + (j == 1), 3)), 4)
    assert np.array_equal(person, pm_person) and np.array_equal(slot, want_slot)
    assert np.array_equal(period, _np_month_start((first + m) // 12, (first + m) % 12 + 1))
    sal, pay = want_slot == 0, (want_slot >= 1) & (want_slot <= 3)
    assert np.array_equal(base, smic[m] * level_base[pm_person])
    assert np.array_equal(level[sal], py_level[py[row_pm][sal]] / 12) and np.array_equal(level[~sal], base[~sal])
    assert np.array_equal(payer[sal], py_employer[py[row_pm][sal]]) and np.array_equal(version[sal],
                                                                                    py_version[py[row_pm][sal]])
    assert np.array_equal(payer[pay], 1000 + want_slot[pay] - 1)
    assert np.array_equal(version[pay], pm_person[pay] * 4 + want_slot[pay] - 1)
