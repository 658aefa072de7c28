"""Career and resource aggregation kernels against independent pandas implementations of the rules."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nirlink.engine.reference._tables import year_table
from nirlink.kernels import InputError, ReferenceDataError
from nirlink.kernels._career import aggregate_career
from nirlink.kernels._resources import aggregate_resources

T = year_table()
DAYS_PER_QUARTER = {1: 50, 2: 60, 4: 90, 5: 90}  # R351-12: unemployment, sickness, disability, military


def career_reference(df: pd.DataFrame, best: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The regime general rules, written directly on a DataFrame (one row per career row)."""
    rows = []
    for (p, y), g in df.groupby(["person", "year"], sort=True):
        salary = g.loc[g.kind == 0, "cents"].sum() / 100.0
        i = y - T.first_year
        q_sal = min(4, math.floor(salary / T.salval[i])) if salary > 0 else 0
        q_assim = int((g.kind == 3).sum())
        for k, per in DAYS_PER_QUARTER.items():
            q_assim += int(g.loc[g.kind == k, "days"].sum()) // per
        q = min(4, q_sal + q_assim)
        capped = min(salary, T.pass_annual[i])
        rows.append(dict(person=p, year=y, gross=salary, capped=capped, q_sal=q_sal, q_assim=q_assim, q=q,
                         revalued=capped * T.reval[i], eligible=salary > 0 and (y < 2004 or q >= 1)))
    years = pd.DataFrame(rows)
    persons = []
    for p in sorted(best):
        g = years[years.person == p] if len(years) else years
        if len(g) == 0:
            persons.append(dict(person=p, quarters=0, first=0, last=0, n=0, sam=0.0, used=0))
            continue
        elig = g.loc[g.eligible, "revalued"].sort_values(ascending=False)
        top = elig.iloc[: best[p]]
        persons.append(dict(person=p, quarters=int(g.q.sum()), first=int(g.year.min()), last=int(g.year.max()),
                            n=len(g), sam=float(top.mean()) if len(top) else 0.0, used=len(top)))
    return years, pd.DataFrame(persons)


career_rows = st.lists(st.tuples(
    st.integers(0, 5),  # person
    st.integers(1995, 2024),  # year
    st.integers(0, 5),  # kind
    st.integers(0, 6_000_000),  # cents
    st.integers(0, 366),  # days
), max_size=60)


@given(career_rows, st.lists(st.integers(1, 25), min_size=6, max_size=6))
def test_career_kernel_matches_reference(rows, best_list):
    df = pd.DataFrame(rows, columns=["person", "year", "kind", "cents", "days"])
    gross = np.where(df.kind == 0, df.cents / 100.0, np.nan)
    best = dict(enumerate(best_list))
    res = aggregate_career(df.person.values, 6, df.year.values, df.kind.values, gross, df.days.values,
                           best_years=np.array(best_list), table=T)
    ref_years, ref_persons = career_reference(df.assign(cents=np.where(df.kind == 0, df.cents, 0)), best)
    y = res["years"]
    assert len(y["person"]) == len(ref_years)
    if len(ref_years):
        assert y["person"].tolist() == ref_years.person.tolist()
        assert y["year"].tolist() == ref_years.year.tolist()
        assert np.allclose(y["gross_cents"] / 100.0, ref_years.gross, atol=1e-9)
        assert np.allclose(y["capped_cents"] / 100.0, ref_years.capped, atol=0.006)
        assert y["quarters_salary"].tolist() == ref_years.q_sal.tolist()
        assert y["quarters_assimilated"].tolist() == ref_years.q_assim.tolist()
        assert y["quarters"].tolist() == ref_years.q.tolist()
        assert y["counts_for_sam"].tolist() == ref_years.eligible.tolist()
    p = res["persons"]
    assert p["quarters"].tolist() == ref_persons.quarters.tolist()
    assert p["first_year"].tolist() == ref_persons["first"].tolist()
    assert p["last_year"].tolist() == ref_persons["last"].tolist()
    assert p["sam_years"].tolist() == ref_persons.used.tolist()
    assert np.allclose(p["sam"], ref_persons.sam, rtol=1e-9, atol=0.01)


def test_career_kernel_ignores_row_order():
    rng = np.random.default_rng(1)
    n = 5000
    person, year = rng.integers(0, 300, n), rng.integers(1990, 2026, n)
    kind, days = rng.integers(0, 6, n), rng.integers(0, 200, n)
    gross = np.where(kind == 0, np.round(rng.uniform(0, 60000, n), 2), np.nan)
    best = np.full(300, 25)
    a = aggregate_career(person, 300, year, kind, gross, days, best_years=best, table=T)
    # shuffled rows, then rows grouped by person (years in any order): the kernel's sorted path
    for perm in (rng.permutation(n), np.argsort(person, kind="stable")):
        b = aggregate_career(person[perm], 300, year[perm], kind[perm], gross[perm], days[perm], best_years=best,
                             table=T)
        for part in ("years", "persons"):
            for key in a[part]:
                assert np.array_equal(a[part][key], b[part][key]), key


@pytest.mark.parametrize("gross,kind,fragment", [
    ([np.nan], [0], "gross_salary on salary rows must be a finite number; nan at row 0"),
    ([-5.0], [0], "gross_salary on salary rows must be >= 0; -5.0 at row 0"),
])
def test_career_rejects_bad_amounts(gross, kind, fragment):
    with pytest.raises(InputError, match=fragment.replace(";", ";").replace("(", r"\(")):
        aggregate_career([0], 1, [2000], kind, gross, [10], best_years=[25], table=T)


def test_career_names_years_outside_the_tables():
    with pytest.raises(ReferenceDataError, match="1985"):
        aggregate_career([0, 0], 1, [2000, 1985], [0, 0], [1.0, 1.0], [1, 1], best_years=[25], table=T)


def test_nan_on_a_non_salary_row_is_fine():
    r = aggregate_career([0], 1, [2000], [1], [np.nan], [120], best_years=[25], table=T)
    assert r["years"]["quarters_assimilated"].tolist() == [2]


# ------------------------------------------------------------------ resources

resource_rows = st.lists(st.tuples(
    st.integers(0, 4),  # person
    st.integers(2019 * 12, 2019 * 12 + 40),  # month
    st.integers(0, 5),  # kind
    st.integers(0, 500_000),  # cents
), max_size=80)


@given(resource_rows)
def test_resource_kernel_matches_pandas(rows):
    df = pd.DataFrame(rows, columns=["person", "month", "kind", "cents"])
    res = aggregate_resources(df.person.values, 5, df.month.values, df.kind.values, df.cents.values / 100.0)
    m = res["months"]
    ref = df.groupby(["person", "month"]).cents.agg(["sum", "size"]).reset_index()
    assert m["person"].tolist() == ref.person.tolist() and m["month"].tolist() == ref.month.tolist()
    assert m["total"].tolist() == ref["sum"].tolist() and m["rows"].tolist() == ref["size"].tolist()
    by_kind = df.pivot_table(index=["person", "month"], columns="kind", values="cents", aggfunc="sum", fill_value=0)
    for k in range(6):
        expected = by_kind[k].tolist() if k in by_kind.columns else [0] * len(ref)
        assert m["by_kind"][:, k].tolist() == expected
    yr = df.assign(year=df.month // 12).groupby(["person", "year"]).cents.sum().reset_index()
    assert res["years"]["total"].tolist() == yr.cents.tolist()
    # reviews: quarterly months M with months M-13..M-2 in the window
    monthly = ref.rename(columns={"sum": "total"})
    expected = []
    for p, g in monthly.groupby("person"):
        months = g.month.values
        for r in range(months.min() + 2, months.max() + 14):
            if r % 3:
                continue
            inside = (months >= r - 13) & (months <= r - 2)
            expected.append((p, r, int(g.total.values[inside].sum()), int(inside.sum())))
    rv = res["reviews"]
    got = list(zip(rv["person"].tolist(), rv["review_month"].tolist(), rv["total"].tolist(), rv["months"].tolist()))
    assert got == expected


def test_resource_kernel_ignores_row_order():
    rng = np.random.default_rng(2)
    n = 5000
    person, month = rng.integers(0, 200, n), rng.integers(2015 * 12, 2026 * 12, n)
    kind, amount = rng.integers(0, 6, n), np.round(rng.uniform(0, 3000, n), 2)
    a = aggregate_resources(person, 200, month, kind, amount)
    # shuffled rows, then rows grouped by person (months in any order): the kernel's sorted path
    for perm in (rng.permutation(n), np.argsort(person, kind="stable")):
        b = aggregate_resources(person[perm], 200, month[perm], kind[perm], amount[perm])
        for part in ("months", "years", "reviews"):
            for key in a[part]:
                assert np.array_equal(a[part][key], b[part][key]), (part, key)


def test_resources_reject_negative_and_nan():
    with pytest.raises(InputError, match="-1.0 at row 1"):
        aggregate_resources([0, 0], 1, [100, 101], [0, 0], [1.0, -1.0])
    with pytest.raises(InputError, match="finite"):
        aggregate_resources([0], 1, [100], [0], [np.inf])


def test_empty_input():
    r = aggregate_resources([], 0, [], [], [])
    assert len(r["months"]["person"]) == 0 and len(r["reviews"]["person"]) == 0
    c = aggregate_career([], 2, [], [], [], [], best_years=[25, 25], table=T)
    assert c["persons"]["quarters"].tolist() == [0, 0]
