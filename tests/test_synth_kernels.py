"""The synthetic generator's Numba kernels: calendar helpers against numpy's calendar, the
career and resource kernels (which draw inside
their loops, so no vectorised reference gives the same values) against the model's rules, row
by row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nirlink.engine.synth._expand import _month_start, draw_careers
from nirlink.engine.synth._expand_resources import draw_resources
from nirlink.engine.synth._signals import _in_order
from nirlink.kernels._dates import civil_month


def _np_month_start(year, month):
    m = (np.asarray(year, np.int64) - 1970) * 12 + (np.asarray(month, np.int64) - 1)
    return m.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)


@given(year=st.integers(1850, 2150), month=st.integers(1, 13))
def test_month_start_matches_numpy_calendar(year, month):
    assert _month_start(year, month) == _np_month_start(year, month)


@given(day=st.integers(-80_000, 80_000))
@example(day=0)
@example(day=-1)
@example(day=11_016)  # 2000-02-29
def test_civil_month_matches_numpy_calendar(day):
    m = np.datetime64(day, "D").astype("datetime64[M]").astype(np.int64)
    assert civil_month(day) == m + 1970 * 12


FIRST, LAST = 1990, 2025
SMIC = np.linspace(9_000.0, 21_000.0, LAST - FIRST + 1)


def _persons(seed, n):
    rng = np.random.default_rng(seed)
    birth_year = rng.integers(1935, 2007, n)
    sex = rng.integers(1, 3, n).astype(np.int8)
    death = np.where(rng.random(n) < 0.3, rng.integers(7_500, 20_400, n), -1)  # 1990-2025
    return birth_year, sex, death


def _careers(seed, n, rows_per_person=37.0, n_employers=50):
    birth_year, sex, death = _persons(seed, n)
    out = draw_careers(np.random.default_rng(seed), birth_year, sex, death, SMIC, FIRST, LAST, rows_per_person,
                       n_employers, 1.0, 4 * n)
    return (birth_year, sex, death), out


@settings(max_examples=60)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 40))
@example(seed=0, n=0)
def test_careers_follow_the_model_row_by_row(seed, n):
    (birth_year, sex, death), out = _careers(seed, n)
    (person, version, employer, year, start, end, kind, gross, days), py, per_person, (v_person, v_emp) = out
    lo, hi, retire_year, level_base = per_person
    py_start, py_employer, py_version, py_level = py
    n_emp = 50
    # grouped by person then year, every row inside its person's career years and its year
    key = person.astype(np.int64) * 10_000 + year
    assert np.all(np.diff(key) >= 0)
    assert np.all((year >= lo[person]) & (year <= hi[person]))
    assert np.array_equal(_np_month_start(year, 1) <= start, np.ones(len(start), bool))
    assert np.all((start <= end) & (end < _np_month_start(year + 1, 1)))
    assert np.array_equal(days, (end - start + 1).astype(np.int16))
    # no row starts after the death month
    dead = death[person] >= 0
    death_month = np.asarray(death, "datetime64[D]").astype("datetime64[M]").astype(np.int64)
    assert np.all(~dead | (start.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
                          <= death_month[person]))
    # salaries only for salaries, cents, positive; maternity for women 20-42
    assert np.array_equal(np.isnan(gross), kind != 0)
    sal = gross[kind == 0]
    assert np.all(sal > 0) and np.array_equal(sal, np.round(sal, 2))
    age = year - birth_year[person]
    assert np.all((kind != 3) | ((sex[person] == 2) & (age >= 20) & (age <= 42)))
    # declarants: payers' versions are the person's (person * 4 + payer), employers' their own
    assert np.array_equal(employer[kind == 1], np.full(int((kind == 1).sum()), n_emp + 2))
    assert np.array_equal(version[kind == 1], person[kind == 1] * 4 + 2)
    health = (kind == 2) | (kind == 3)
    assert np.all(employer[health] == n_emp + 3) and np.array_equal(version[health], person[health] * 4 + 3)
    own = version[kind == 0] - 4 * n
    assert np.all(own >= 0) and np.array_equal(v_person[own], person[kind == 0])
    assert np.array_equal(v_emp[own], employer[kind == 0]) and np.all(employer[kind == 0] < n_emp)
    # the person-year view: one entry per career year, the main employer's row among the year's
    n_years = np.maximum(hi - lo + 1, 0)
    assert len(py_employer) == n_years.sum() and np.array_equal(py_start, np.cumsum(n_years) - n_years)
    assert np.all(retire_year - birth_year >= 60) and np.all(level_base > 0)
    # an inactive year (no main employer) has no row but an unemployment gap after a switch
    inactive = py_employer[py_start[person] + (year - lo[person])] == -1
    assert np.all(kind[inactive] == 1)
    # the same generator state gives the same rows
    again = _careers(seed, n)[1]
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(out[0], again[0]))


def test_careers_reach_the_configured_rows_per_person():
    (_, _, _), out = _careers(7, 4000, rows_per_person=37.0)
    assert abs(len(out[0][0]) / 4000 - 37) < 1.5
    kinds = np.bincount(out[0][6], minlength=4) / len(out[0][6])
    assert 0.6 < kinds[0] < 0.95 and kinds[3] > 0


def _resources(seed, n, plant=None, n_months=84, first=2019 * 12):
    (birth_year, sex, death), out = _careers(seed, n)
    py_start, py_employer, py_version, py_level = out[1]
    lo, hi, retire_year, level_base = out[2]
    smic = np.linspace(1_500.0, 1_800.0, n_months)
    death_month = np.where(death >= 0, np.asarray(np.maximum(death, 0), "datetime64[D]").astype("datetime64[M]")
                           .astype(np.int64) + 1970 * 12, -1)
    if plant is None:
        plant = (np.zeros(n, bool), death_month, np.zeros(n, np.int64), np.zeros(n, bool), 0.0)
    rows, new = draw_resources(np.random.default_rng(seed + 1), first, n_months, smic, death, lo, hi, py_start,
                               py_employer, py_version, py_level, retire_year, level_base, 90.0, 50, 1.0, 1000,
                               *plant)
    return (birth_year, sex, death, death_month), out, smic, rows, new


@settings(max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 25))
def test_resources_follow_the_model_row_by_row(seed, n):
    (birth_year, sex, death, _), out, smic, rows, (v_person, v_emp) = _resources(seed, n)
    py_start, py_employer, py_version, py_level = out[1]
    lo, hi, retire_year, level_base = out[2]
    first, n_months, n_emp = 2019 * 12, 84, 50
    person, version, payer, period, kind, amount = rows
    assert _in_order(person, period)
    m = period.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) + 1970 * 12 - first
    assert np.all((m >= 0) & (m < n_months)) and np.array_equal(period, _np_month_start((first + m) // 12,
                                                                                         (first + m) % 12 + 1))
    assert np.all((death[person] < 0) | (period <= death[person]))  # nothing paid after death (nothing planted)
    y = (first + m) // 12
    in_career = (y >= lo[person]) & (y <= hi[person])
    # pensions past the retirement year, outside the career; benefits from the pool's payers
    for k, payer_k in ((1, 0), (2, 1), (3, 2), (4, 3)):
        rows_k = kind == k
        assert np.all(payer[rows_k] == n_emp + payer_k) and np.array_equal(version[rows_k], person[rows_k] * 4 + payer_k)
    assert np.all(~in_career[kind == 1] & (y[kind == 1] >= retire_year[person[kind == 1]]))
    pm = person.astype(np.int64) * n_months + m  # a base and a complementary pension each month
    assert np.array_equal(np.unique(pm[kind == 1]), pm[kind == 1]) and np.array_equal(pm[kind == 1], pm[kind == 2])
    assert np.all(in_career[kind == 3]) and not np.any(kind == 5)
    # salaries: the year's main employer and its version, or a second salary of its own version
    sal = np.flatnonzero(kind == 0)
    py = np.where(in_career, py_start[person] + (y - lo[person]), -1)[sal]
    main = (py >= 0) & (version[sal] < 1000)
    assert np.array_equal(payer[sal][main], py_employer[py[main]]) and np.array_equal(version[sal][main],
                                                                                       py_version[py[main]])
    second = sal[~main]
    assert np.array_equal(v_person[version[second] - 1000], person[second])
    assert np.array_equal(v_emp[version[second] - 1000], payer[second])
    # amounts: cents, at least 1; a daily allowance is half a day of the base level for 3-30 days
    assert np.all(amount >= 1) and np.array_equal(amount, np.round(amount, 2))
    daily = kind == 4
    d = amount[daily] / (smic[m[daily]] * level_base[person[daily]] / 60)
    assert np.all((d > 2.99) & (d < 30.01))


@settings(max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 25), n_months=st.sampled_from([6, 12, 30, 84]))
def test_planted_cases_match_a_reference_on_the_plain_rows(seed, n, n_months):
    """Planting in the kernel against planting by hand on the rows the same draws give without it."""
    first = 2019 * 12
    last = first + n_months - 1
    rng = np.random.default_rng(seed)
    drop = rng.random(n) < 0.5
    top_up = rng.random(n) < 0.5
    ceiling = float(rng.choice([0.0, 5_000.0, 20_000.0, 1e9]))
    (_, _, death, dm), _, _, plain, _ = _resources(seed, n, n_months=n_months, first=first)
    dead_months = np.where((dm >= first) & (dm < last) & (rng.random(n) < 0.7),
                           np.minimum(rng.integers(1, 7, n), last - dm), 0)
    alive = (dm < 0) | (dm > last)
    top_up &= alive
    dead_months[alive] = 0
    # income after death and top-ups draw nothing: the planted rows are the plain rows and theirs
    got = _resources(seed, n, plant=(np.zeros(n, bool), dm, dead_months, top_up, ceiling), n_months=n_months,
                     first=first)[3]
    person, version, payer, period, kind, amount = (np.asarray(a) for a in plain)
    month = period.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) + 1970 * 12
    want = [list(t) for t in zip(person.tolist(), version.tolist(), payer.tolist(), period.tolist(), kind.tolist(),
                                 amount.tolist())]
    out = []
    for i in range(n):
        mine = [r for r, p in zip(want, person) if p == i]
        mm = [mo for mo, p in zip(month, person) if p == i]
        if dead_months[i] and mine:
            for t in range(dead_months[i]):
                mo = dm[i] + 1 + t
                day = int(_np_month_start(mo // 12, mo % 12 + 1))
                mine.append([i, mine[-1][1], mine[-1][2], day, mine[-1][4], mine[-1][5]])
                mm.append(mo)
        if top_up[i] and sum(r[5] for r, mo in zip(mine, mm) if mo > last - 12) < ceiling:
            merged = [r for r, mo in zip(mine, mm) if mo <= last - 12]
            for mo in range(last - 11, last + 1):
                these = [r for r, x in zip(mine, mm) if x == mo]
                merged += these
                merged.append([i, i * 4, 50, int(_np_month_start(mo // 12, mo % 12 + 1)), 5,
                               np.rint(max(ceiling / 12 - sum(r[5] for r in these), 1.0) * 100) / 100])
            mine = merged
        out += mine
    assert [list(t) for t in zip(*(a.tolist() for a in got))] == out
    # non-take-up: no base pension for those persons (the months' other payments stay)
    dropped = _resources(seed, n, plant=(drop, dm, np.zeros(n, np.int64), np.zeros(n, bool), 0.0),
                         n_months=n_months, first=first)[3]
    assert not np.any((dropped[4] == 1) & drop[dropped[0]])
    assert np.array_equal(np.unique(dropped[0][dropped[4] == 2]), np.unique(person[(kind == 2)]))


# ---------------------------------------------------------------- the noise model's name errors

from nirlink.engine.synth._noise import _case_spacing, _typo, strip_accents  # noqa: E402  (the reference)
from nirlink.engine.synth._typos import (CASING, STRIP_ACCENTS, SWAPPED, TYPO_FIRST, TYPO_LAST,  # noqa: E402
                                         noisy_names)

# the characters of the names' vocabularies, and the separators case changes look for
_NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ '-ÀÂÄÆÇÈÉÊËÎÏÔÖÙÛÜŸàéïœ"
_names = st.lists(st.text(_NAME_CHARS, max_size=12), min_size=1, max_size=6)


def _reference(last, first, last_src, first_src, flags, draw_row, u):
    """_noise.py's loop, as it was before the kernel: Python strings, one version at a time."""
    out_l, out_f = [], []
    for t in range(len(last_src)):
        ln, fn, fl = last[last_src[t]], first[first_src[t]], int(flags[t])
        if fl & STRIP_ACCENTS:
            fn = strip_accents(fn)
        if draw_row[t] >= 0:
            uk = u[draw_row[t]].tolist()
            if fl & TYPO_LAST:
                ln = _typo(uk[0], uk[1], uk[2], ln)
            if fl & TYPO_FIRST:
                fn = _typo(uk[3], uk[4], uk[5], fn)
            if fl & SWAPPED:
                ln, fn = fn, ln
            if fl & CASING:
                ln, fn = _case_spacing(uk[6], ln), _case_spacing(uk[7], fn)
        out_l.append(ln)
        out_f.append(fn)
    return out_l, out_f


@settings(max_examples=300)
@given(last=_names, first=_names, data=st.data())
@example(last=["A"], first=[""], data=None)  # one character and empty: a typo appends
@example(last=["JEAN-PIERRE DE LA"], first=["ÉLÉONORE MARIE-ÈVE"], data=None)
@example(last=["O'NEIL"], first=["ŸVES"], data=None)
@example(last=["XY"], first=["QZ"], data=None)  # transpositions at the last position
def test_noisy_names_match_the_python_rules(last, first, data):
    if data is None:  # the examples: every flag, fixed uniforms spanning the operations
        entries = [(0, 0, f, 0 if f & 15 else -1) for f in range(32)] * 4
        u = np.array([[(k % 4) / 4 + 0.1, 0.999 * (k % 3) / 2, 0.5, (k % 4) / 4 + 0.05, 0.99, 0.01,
                       ((k // 4) % 4) / 4 + 0.2, (k % 4) / 4] for k in range(len(entries))])
        draw_row = np.array([k if e[3] == 0 else -1 for k, e in enumerate(entries)])
    else:
        entries = data.draw(st.lists(st.tuples(st.integers(0, len(last) - 1), st.integers(0, len(first) - 1),
                                               st.integers(0, 31), st.booleans()), max_size=30))
        drawn = np.array([bool(e[3]) or bool(e[2] & 15) for e in entries], bool)
        draw_row = np.where(drawn, np.cumsum(drawn) - 1, -1)
        u = np.array(data.draw(st.lists(st.lists(st.floats(0, 1, exclude_max=True), min_size=8, max_size=8),
                                        min_size=int(drawn.sum()), max_size=int(drawn.sum()))), float).reshape(-1, 8)
    last_src = np.array([e[0] for e in entries], np.int64)
    first_src = np.array([e[1] for e in entries], np.int64)
    flags = np.array([e[2] for e in entries], np.int8)
    got_l, got_f = noisy_names(pa.array(last, pa.string()), pa.array(first, pa.string()), last_src, first_src,
                               flags, draw_row, u)
    want_l, want_f = _reference(last, first, last_src, first_src, flags, draw_row, u)
    assert got_l.to_pylist() == want_l
    assert got_f.to_pylist() == want_f


def test_noisy_names_refuse_characters_beyond_their_tables():
    import pytest

    from nirlink.kernels import InputError

    with pytest.raises(InputError, match="U\\+4E2D"):
        noisy_names(pa.array(["中"]), pa.array(["A"]), np.zeros(1, np.int64), np.zeros(1, np.int64),
                    np.zeros(1, np.int8), np.full(1, -1), np.zeros((0, 8)))
