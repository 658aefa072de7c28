"""The reference tables as loaded, checked against the public rules they encode."""

import numpy as np
import pytest

from nirlink.engine import ReferenceDataError
from nirlink.engine.reference._tables import FRF_PER_EUR, cohort_table, year_table


def test_years_are_1990_to_2026_and_in_euros():
    t = year_table()
    assert (t.first_year, t.last_year) == (1990, 2026)
    assert t.pass_annual[t.index([2002])[0]] == 28224
    assert t.pass_annual[t.index([2026])[0]] == 48060
    # 1990: 131040 FRF
    assert t.pass_annual[0] == pytest.approx(131040 / FRF_PER_EUR, abs=0.01)


def test_salary_validating_a_quarter_is_200_then_150_hourly_smic():
    t = year_table()
    for year in range(1990, 2027):
        i = t.index([year])[0]
        factor = 200 if year <= 2013 else 150
        assert t.salval[i] == pytest.approx(factor * t.smic_hourly[i], rel=2e-3), year
    assert t.salval[t.index([2014])[0]] == pytest.approx(1429.5)


def test_revaluation_coefficients_published_until_2021_then_one():
    t = year_table()
    assert t.reval[t.index([1990])[0]] == pytest.approx(1.555186)
    assert t.reval[t.index([2021])[0]] == pytest.approx(1.019088)
    later = t.index([2022, 2023, 2026])
    assert np.all(t.reval[later] == 1.0) and not t.reval_published[later].any()


def test_years_outside_the_tables_are_refused_with_the_year_named():
    with pytest.raises(ReferenceDataError, match="1989"):
        year_table().index(np.array([1995, 1989]))
    with pytest.raises(ReferenceDataError, match="2031"):
        year_table().index(np.array([2031]))


def test_cohort_rules():
    c = cohort_table()
    assert c.best_years([1933, 1934, 1940, 1948, 1960]).tolist() == [10, 11, 17, 25, 25]
    assert c.required_quarters([1961, 1961], [8, 9]).tolist() == [168, 169]
    assert c.required_quarters([1965, 1965, 1970], [3, 4, 1]).tolist() == [170, 171, 172]
    assert c.required_quarters([1961], [0]).tolist() == [168]  # unknown month: the cohort's first rule
    with pytest.raises(ReferenceDataError, match="1850"):
        c.best_years([1850])
