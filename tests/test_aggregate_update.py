"""An increment's update of a person bucket's aggregates (engine/stages/_aggregate_update.py):
the previous aggregates and accumulators plus the new rows give every table of aggregating
all the rows at once, bit for bit - rows added to a year or a month that already had rows,
late rows for an earlier month or year, days of one kind split across months, new persons."""

from __future__ import annotations

import datetime

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from nirlink.engine.stages._aggregate_partitions import CAREER_STATE, career_partition, resource_partition
from nirlink.engine.stages._aggregate_update import career_update_rows, resource_update_rows
from nirlink.kernels._career import CAREER_KINDS
from nirlink.kernels._resources import RESOURCE_KINDS

FIRST_REVIEW = 2021 * 12


def _persons(codes):
    return [f"P{c:02d}" for c in codes]


def _career(rows) -> pa.Table:
    """rows: (person code, year, kind index, gross, days); a person's birth year follows their code
    (code 0: unknown)."""
    p, y, k, g, d = zip(*rows) if rows else ((),) * 5
    return pa.table({
        "person": pa.array(_persons(p), pa.string()),
        "person_birth_year": pa.array([1950 + c if c else None for c in p], pa.int16()),
        "person_birth_month": pa.array([c % 12 + 1 if c else None for c in p], pa.int8()),
        "year": pa.array(y, pa.int16()),
        "kind": pa.array([CAREER_KINDS[i] for i in k], pa.string()).dictionary_encode(),
        "gross_salary": pa.array([x if i == 0 else None for x, i in zip(g, k)], pa.float64()),
        "days": pa.array(d, pa.int16()),
    })


def _resource(rows) -> pa.Table:
    p, m, k, a = zip(*rows) if rows else ((),) * 4
    return pa.table({
        "person": pa.array(_persons(p), pa.string()).dictionary_encode(),
        "period": pa.array([datetime.date(x // 12, x % 12 + 1, 1) for x in m], pa.date32()),
        "kind": pa.array([RESOURCE_KINDS[i] for i in k], pa.string()),
        "amount": pa.array(a, pa.float64()),
    })


def _equal(updated: dict, full: dict) -> None:
    assert updated.keys() == full.keys()
    for name in full:
        assert updated[name].equals(full[name]), name


amounts = st.integers(0, 600_000_00).map(lambda c: c / 100.0) | st.floats(0, 5_000, allow_nan=False)
career_rows = st.lists(st.tuples(st.integers(0, 5), st.integers(1995, 2024), st.integers(0, len(CAREER_KINDS) - 1),
                                 amounts, st.integers(0, 120)), max_size=40)
resource_rows = st.lists(st.tuples(st.integers(0, 5), st.integers(2019 * 12, 2024 * 12 + 11),
                                   st.integers(0, len(RESOURCE_KINDS) - 1), amounts), max_size=40)

# unemployment 30 + 30 days of one year (one quarter only once added up), a late salary in a
# year that had one, a second maternity, a salary crossing the PASS, a new person
CAREER_EXAMPLE = ([(1, 2010, 1, 0.0, 30), (1, 2010, 0, 20_000.0, 0), (2, 2012, 3, 0.0, 0), (3, 2015, 0, 1_000.0, 0)],
                  [(1, 2010, 1, 0.0, 30), (1, 2010, 0, 30_000.0, 0), (2, 2012, 3, 0.0, 0), (4, 2016, 0, 5.0, 0)])
# a month that had rows gets more (same kind and another), a late month of an earlier year,
# a month of zero amounts, a new person
RESOURCE_EXAMPLE = ([(1, 2022 * 12 + 4, 0, 1_000.10), (1, 2022 * 12 + 5, 1, 0.0), (2, 2021 * 12, 2, 3.0)],
                    [(1, 2022 * 12 + 4, 0, 0.20), (1, 2022 * 12 + 4, 3, 9.99), (1, 2020 * 12 + 2, 0, 7.0),
                     (1, 2022 * 12 + 5, 1, 0.0), (5, 2023 * 12, 4, 1.0)])


@given(career_rows, career_rows)
@example(*CAREER_EXAMPLE)
@example([], CAREER_EXAMPLE[1])
@example(CAREER_EXAMPLE[0], [])
@example([], [(1, 2010, 0, 0.005, 0), (1, 2010, 0, 2.675, 0)])  # half cents: rounded alike on both paths
def test_career_update_equals_aggregating_every_row(before, new):
    full, _ = career_partition(_career(before + new))
    previous, _ = career_partition(_career(before))
    state = previous[CAREER_STATE] if before else None
    updated, stats = career_partition(career_update_rows(state, _career(new)))
    _equal(updated, full)
    assert stats["persons"] == len({p for p, *_ in before + new})


@given(resource_rows, resource_rows)
@example(*RESOURCE_EXAMPLE)
@example([], RESOURCE_EXAMPLE[1])
@example(RESOURCE_EXAMPLE[0], [])
@example([], [(0, 24228, 0, 0.0), (0, 24228, 0, 0.005)])  # half a cent: rounded alike on both paths
def test_resource_update_equals_aggregating_every_row(before, new):
    full, _ = resource_partition(_resource(before + new), first_review_month=FIRST_REVIEW)
    previous, _ = resource_partition(_resource(before), first_review_month=FIRST_REVIEW)
    months = previous["resource_person_month"] if before else None
    updated, _ = resource_partition(resource_update_rows(months, _resource(new)), first_review_month=FIRST_REVIEW)
    _equal(updated, full)


def test_update_needs_the_days_not_the_published_quarters():
    """The published year holds quarters_assimilated = 0 after 30 days of unemployment; 30 more
    days make one quarter: the state keeps the days (what fails if only the outputs were kept)."""
    before, new = [(1, 2010, 1, 0.0, 30)], [(1, 2010, 1, 0.0, 30)]
    previous, _ = career_partition(_career(before))
    assert previous["career_person_year"]["quarters_assimilated"].to_pylist() == [0]
    assert previous[CAREER_STATE]["days_unemployment"].to_pylist() == [30]
    updated, _ = career_partition(career_update_rows(previous[CAREER_STATE], _career(new)))
    assert updated["career_person_year"]["quarters_assimilated"].to_pylist() == [1]


def test_amounts_too_large_to_update_exactly_are_refused():
    from nirlink.kernels import StageError

    big = np.float64(2.0 ** 50 / 100 * 1.01)
    previous, _ = resource_partition(_resource([(1, 2022 * 12, 0, float(big))]))
    with pytest.raises(StageError, match="too large to update exactly"):
        resource_update_rows(previous["resource_person_month"], None, "resource person bucket 7")


@pytest.mark.parametrize("with_state", [True, False])
def test_plan_updates_grown_groups_only_after_a_job_with_the_accumulators(tmp_path, with_state):
    """Groups {0, 1} (bucket 1 gained a file), {2} (untouched), {3} (rewritten): the first is
    updated, the second reused, the third computed from all its rows; after a previous job
    without career accumulators every career group is computed again, none reused."""
    import json

    from nirlink.engine.stages._aggregate_increment import plan_groups

    prev = tmp_path / "prev"
    prev.mkdir()
    counts = {"kind": "career", "rows_in": 5, "rows_without_person": 1}
    groups = [{"key": k, "buckets": b, "counts": counts} for k, b in ((0, [0, 1]), (2, [2]), (3, [3]))]
    manifest = {"row_groups": {"career": groups}, "state": {CAREER_STATE: {"rows": 0}} if with_state else {}}
    (prev / "_manifest.json").write_text(json.dumps(manifest))
    parts = [(0, ["b0/a.parquet"]), (1, ["b1/a.parquet", "b1/m2026-01-new-00000.parquet"]), (2, ["b2/a.parquet"]),
             (3, ["b3/m2026-01-previous-3.parquet"])]
    increment = {"previous": str(prev), "affected": {"career": ["00001", "00003"]},
                 "rewritten": {"career": ["00003"]}, "new_prefix": "m2026-01-", "rows_suffix": "-m2026-01"}
    todo, reused = plan_groups("career", parts, increment, tmp_path / "out")
    plan = {key: rows for key, _, rows in todo}
    if with_state:
        assert plan == {0: ("m2026-01-", "-m2026-01", str(prev), counts), 3: True}
        assert [e["key"] for e in reused] == [2]
    else:
        assert plan == {0: ("m2026-01-", "-m2026-01"), 2: ("m2026-01-", "-m2026-01"), 3: True} and reused == []
    # the cost rule: accumulators beyond half the group's rows are not worth reading
    counts["person_years"] = 3
    (prev / "_manifest.json").write_text(json.dumps(manifest))
    todo, _ = plan_groups("career", parts, increment, tmp_path / "out2")
    assert {key: rows for key, _, rows in todo}[0] == ("m2026-01-", "-m2026-01")


@pytest.mark.parametrize("state", [True, False])
def test_reused_groups_carry_the_accumulators_only_when_the_job_writes_them(tmp_path, state):
    """A reused group's published tables are linked from the previous job; its career
    accumulators only when this job writes them (else its output would hold some buckets'
    accumulators and not others')."""
    import json

    from nirlink.engine.stages._aggregate_increment import plan_groups

    prev = tmp_path / "prev"
    for name in ("career_person_year", CAREER_STATE):
        (prev / name).mkdir(parents=True)
        (prev / name / "part-00000.parquet").write_bytes(b"x")
    groups = [{"key": 0, "buckets": [0], "counts": {"kind": "career", "rows_in": 5, "rows_without_person": 0}}]
    (prev / "_manifest.json").write_text(json.dumps({"row_groups": {"career": groups},
                                                     "state": {CAREER_STATE: {"rows": 1}}}))
    out = tmp_path / "out"
    increment = {"previous": str(prev), "affected": {"career": []}, "rewritten": {"career": []},
                 "new_prefix": "m2026-01-", "rows_suffix": "-m2026-01"}
    todo, reused = plan_groups("career", [(0, ["b0/a.parquet"])], increment, out, state)
    assert todo == [] and [e["key"] for e in reused] == [0]
    assert (out / "career_person_year" / "part-00000.parquet").exists()
    assert (out / CAREER_STATE / "part-00000.parquet").exists() is state
