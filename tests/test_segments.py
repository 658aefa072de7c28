"""Grouping and segmented-reduction kernels against numpy/pandas references; thread-safety choices."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from nirlink.kernels import InputError
from nirlink.kernels._segments import (
    KERNELS,
    count_runs,
    group_by_key,
    rolling_window_sum,
    segment_count,
    segment_first,
    segment_last,
    segment_max,
    segment_min,
    segment_sum,
    segment_topk_mean,
    sorted_unique,
)

keys_and_values = st.integers(1, 12).flatmap(lambda nk: st.tuples(
    st.just(nk),
    st.lists(st.tuples(st.integers(0, nk - 1), st.integers(-1000, 1000)), max_size=60),
))


@given(keys_and_values)
@example((3, []))
@example((1, [(0, 5)]))
def test_group_and_reduce_match_pandas(case):
    n_keys, rows = case
    keys = np.array([k for k, _ in rows], np.int64)
    values = np.array([v for _, v in rows], np.int64)
    order, starts = group_by_key(keys, n_keys)
    # stable: the order equals a stable argsort by key
    assert order.tolist() == np.argsort(keys, kind="stable").tolist()
    assert starts.tolist() == [0, *np.cumsum(np.bincount(keys, minlength=n_keys)).tolist()]
    v = values[order]
    df = pd.DataFrame({"k": keys, "v": values})
    g = df.groupby("k")["v"]
    full = pd.Index(range(n_keys))
    assert segment_sum(v, starts).tolist() == g.sum().reindex(full, fill_value=0).tolist()
    assert segment_count(starts).tolist() == g.size().reindex(full, fill_value=0).tolist()
    assert segment_min(v, starts, empty=-99).tolist() == g.min().reindex(full, fill_value=-99).tolist()
    assert segment_max(v, starts, empty=-99).tolist() == g.max().reindex(full, fill_value=-99).tolist()
    assert segment_first(v, starts, empty=-99).tolist() == g.first().reindex(full, fill_value=-99).tolist()
    assert segment_last(v, starts, empty=-99).tolist() == g.last().reindex(full, fill_value=-99).tolist()


@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 9)), max_size=80))
def test_count_runs_matches_pandas(rows):
    p = np.array([a for a, _ in rows], np.int64)
    s = np.array([b for _, b in rows], np.int64)
    df = pd.DataFrame({"p": p, "s": s})
    expected = int(((df.p != df.p.shift()) | (df.s != df.s.shift())).sum())
    assert count_runs(p, s) == expected


@given(keys_and_values, st.lists(st.integers(0, 8), min_size=12, max_size=12))
def test_topk_mean_matches_sorting(case, ks):
    n_keys, rows = case
    keys = np.array([k for k, _ in rows], np.int64)
    values = np.array([v for _, v in rows], np.float64)
    order, starts = group_by_key(keys, n_keys)
    k = np.array(ks[:n_keys], np.int64)
    mean, used = segment_topk_mean(values[order], starts, k)
    for s in range(n_keys):
        seg = np.sort(values[keys == s])[::-1][: k[s]]
        assert used[s] == len(seg)
        if len(seg):
            assert mean[s] == pytest.approx(seg.mean(), rel=1e-12, abs=1e-9)
        else:
            assert np.isnan(mean[s])


def _rolling_reference(month, values, starts, period, phase, lo, hi):
    out = []
    for s in range(len(starts) - 1):
        m = month[starts[s]:starts[s + 1]]
        v = values[starts[s]:starts[s + 1]]
        if len(m) == 0:
            continue
        for r in range(m[0] - hi, m[-1] - lo + 1):
            if r % period != phase % period:
                continue
            inside = (m >= r + lo) & (m <= r + hi)
            out.append((s, r, int(v[inside].sum()), int(inside.sum())))
    return out


@given(st.lists(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 10**6)), max_size=15), max_size=5),
       st.integers(1, 4), st.integers(0, 3), st.integers(-15, 0), st.integers(0, 6))
def test_rolling_window_matches_reference(persons, period, phase, lo, width):
    hi = lo + width
    month, values, starts = [], [], [0]
    for rows in persons:
        seen = {}
        for m, v in rows:
            seen[m] = v
        for m in sorted(seen):
            month.append(m)
            values.append(seen[m])
        starts.append(len(month))
    month, values, starts = np.array(month, np.int64), np.array(values, np.int64), np.array(starts, np.int64)
    seg, review, total, months = rolling_window_sum(month, values, starts, period=period, phase=phase, lo=lo, hi=hi)
    got = list(zip(seg.tolist(), review.tolist(), total.tolist(), months.tolist()))
    assert got == _rolling_reference(month, values, starts, period, phase, lo, hi)


@pytest.mark.parametrize("call,fragment", [
    (lambda: group_by_key(np.array([0, 5]), 3), "[0, 3)"),
    (lambda: group_by_key(np.array([0.5]), 3), "integers"),
    (lambda: segment_sum(np.array([1.0, np.nan]), np.array([0, 2])), "nan"),
    (lambda: segment_sum(np.array([1, 2]), np.array([0, 1])), "len(values)"),
    (lambda: segment_topk_mean(np.array([1.0]), np.array([0, 1]), np.array([-1])), ">= 0"),
    (lambda: rolling_window_sum(np.array([3, 1]), np.array([1, 1]), np.array([0, 2])), "strictly increasing"),
    (lambda: rolling_window_sum(np.array([1]), np.array([1.5]), np.array([0, 1])), "cents"),
])
def test_wrappers_reject_bad_arguments(call, fragment):
    with pytest.raises(InputError, match=fragment.replace("[", r"\[").replace(")", r"\)").replace("(", r"\(")):
        call()


def test_kernels_are_serial_and_release_the_gil():
    # the documented choice (kernels/_segments.py): serial kernels that release the GIL,
    # so Dask threads run them in parallel without oversubscribing the cores
    from nirlink.kernels import _career, _resources

    kernels = list(KERNELS) + [_career._scan, _career._career_fused, _resources._months, _resources._years]
    for k in kernels:
        assert k.targetoptions.get("nogil") is True, k
        assert not k.targetoptions.get("parallel"), k


def test_kernels_give_the_same_results_from_many_threads():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 5000, 200_000)
    values = rng.integers(0, 10**6, 200_000)

    def work(_):
        order, starts = group_by_key(keys, 5000)
        return segment_sum(values[order], starts)

    expected = work(0)
    with ThreadPoolExecutor(8) as pool:
        for result in pool.map(work, range(32)):
            assert np.array_equal(result, expected)


@given(st.lists(st.integers(-2**63, 2**63 - 1) | st.integers(-3, 3), max_size=200),
       st.sampled_from([np.int64, np.int32, np.uint64, np.int8]))
def test_sorted_unique_equals_pandas_unique_sorted(values, dtype):
    """sorted_unique (the sort-based unique the link and attach stages use on hashes) gives the
    distinct values in ascending order, as pandas' hash-table unique sorted does."""
    info = np.iinfo(dtype)
    a = np.array([v for v in values if info.min <= v <= info.max], dtype=dtype)
    got = sorted_unique(a)
    want = np.sort(pd.unique(a))
    assert got.dtype == a.dtype and np.array_equal(got, want)
