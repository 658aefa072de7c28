"""The declarant scorecard's ranking: its score against exact binomial oracles, the ranking of
a table, and the synthetic planting of bad declarants (exact count, the larger employers)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nirlink.engine.stages._signals_scorecard import excess_z, rank_scorecard
from nirlink.engine.synth._signals import bad_employers


def _binomial_loglik(k: int, n: int, p: float) -> float:
    """ln P(X = k) without the binomial coefficient (it cancels in the likelihood ratio)."""
    return (k * math.log(p) if k else 0.0) + ((n - k) * math.log(1 - p) if n - k else 0.0)


def _upper_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ binomial(n, p), exactly (integer binomial coefficients)."""
    return sum(math.comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(k, n + 1))


@settings(max_examples=300)
@given(n=st.integers(1, 300), data=st.data(), p0=st.floats(0.01, 0.6))
def test_excess_z_is_the_signed_likelihood_ratio_root(n, data, p0):
    k = data.draw(st.integers(0, n))
    z = float(excess_z([k], [n], p0)[0])
    # the oracle: the binomial likelihood at the declarant's own share against the population's
    g = 2 * (_binomial_loglik(k, n, k / n) - _binomial_loglik(k, n, p0))
    assert abs(z) == pytest.approx(math.sqrt(max(g, 0.0)), rel=1e-9, abs=1e-9)
    assert (z > 0) == (k / n > p0) or abs(k / n - p0) < 1e-12
    if k / n > p0:
        # Chernoff: a share at least this high happens by chance with probability <= exp(-z^2 / 2)
        assert _upper_tail(k, n, p0) <= math.exp(-z * z / 2) * (1 + 1e-9)
        # more problems among the same persons: a clearer excess
        if k < n:
            assert float(excess_z([k + 1], [n], p0)[0]) > z
        # the same share over twice the persons: a clearer excess (a small declarant's luck does not win)
        assert float(excess_z([2 * k], [2 * n], p0)[0]) > z


def test_excess_z_edges():
    assert list(excess_z([0, 3, 0], [0, 0, 10], 0.1)) == [0.0, 0.0, pytest.approx(-math.sqrt(20 * math.log(1 / 0.9)))]
    assert list(excess_z([5], [10], 0.0)) == [0.0]  # no population rate: nothing ranks above another


def test_rank_scorecard_orders_by_excess_and_leaves_small_declarants_unranked():
    """2 problems among 4 persons (50%) rank below 160 among 400 (40%): the large excess is
    clear, the small one could be chance; a very large declarant a little above the population's
    share is not above twice it; declarants under min_rows keep no rank; rejects count as
    problem persons."""
    card = pa.table({
        "declarant": ["small", "big_bad", "good", "tiny", "rejecter", "huge"],
        "rows": [150, 5000, 600_000, 10, 100, 500_000],
        "rejects": [0, 0, 0, 0, 30, 0],
        "persons": [4, 400, 60_000, 2, 30, 50_000],
        "problem_persons": [2, 160, 2400, 2, 0, 4000],
        "settings": ["{}"] * 6,
    })
    ranked, p0 = rank_scorecard(card, 100, ratio=2.0)
    k = np.array([2, 160, 2400, 30, 4000])
    n = np.array([4, 400, 60_000, 60, 50_000])
    assert p0 == pytest.approx(k.sum() / n.sum())  # "tiny" is not ranked, so not in the population
    want_z = excess_z(k, n, 2 * p0)
    names = ["small", "big_bad", "good", "rejecter", "huge"]
    got = ranked.to_pydict()
    assert got["declarant"] == [names[i] for i in np.argsort(-want_z, kind="stable")] + ["tiny"]
    assert got["rank"] == [1, 2, 3, 4, 5, None]
    assert ranked.column_names[-1] == "settings"
    z = dict(zip(got["declarant"], got["excess_z"]))
    for name, w in zip(names, want_z):
        assert z[name] == pytest.approx(w)
    assert got["declarant"][0] == "big_bad" and z["rejecter"] > 0 > max(z["huge"], z["good"])
    assert z["small"] < z["big_bad"] and z["huge"] < 10 < float(excess_z([4000], [50_000], p0)[0])


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(10, 20_000), rate=st.floats(0.0, 0.2))
@settings(max_examples=50)
def test_bad_employers_are_an_exact_share_of_the_larger_half(seed, n, rate):
    bad = bad_employers(seed, n, rate)
    assert len(bad) == min(int(round(rate * n)), n // 2)
    assert len(set(bad.tolist())) == len(bad) and (bad < n // 2).all()
    assert np.array_equal(bad, bad_employers(seed, n, rate))  # the same set in every block


@pytest.fixture(scope="module")
def bad_declarants_job(tmp_path_factory, dask_client):
    """1,500 persons (60 employers), 10% of the employers planted bad, the job up to signals."""
    from conftest import write_job

    from nirlink.engine.jobs._runner import Job
    from nirlink.engine.jobs._spec import load_job
    from nirlink.engine.synth._generate import synth
    from nirlink.engine.synth._params import SynthParams

    base = tmp_path_factory.mktemp("bad_declarants")
    synth(base / "data", persons=1500, partitions=1, client=dask_client,
          params=SynthParams(seed=5, bad_declarant_rate=0.1))
    job_file = write_job(base / "job.toml", base / "data", base / "out",
                         stages=["ingest", "link", "attach", "aggregate", "signals"])
    state = Job(load_job(job_file), client=dask_client).run()
    assert state.status == "succeeded", state.error
    return base / "data", base / "out"


def test_the_ranking_top_is_the_planted_set(bad_declarants_job):
    """The first k ranked declarants are the k planted ones, and nirlink evaluate --signals says so."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from nirlink.engine.synth._evaluate_signals import evaluate_signals

    data, out = bad_declarants_job
    truth = pq.read_table(data / "truth_signals")
    planted = set(truth.filter(pc.equal(truth.column("rule"), "declarant_quality")).column("declarant").to_pylist())
    assert len(planted) == 6
    card = pq.read_table(out / "signals" / "declarant_scorecard").to_pandas()
    ranked = card.dropna(subset=["rank"]).sort_values("rank")
    assert planted <= set(ranked["declarant"])
    assert set(ranked["declarant"][:len(planted)]) == planted
    # the planted ones decline persons' identities far more often than the rest
    top = ranked[ranked["declarant"].isin(planted)]
    assert top["problem_persons_share"].min() > 2 * ranked[~ranked["declarant"].isin(planted)]["problem_persons_share"].max()
    report = evaluate_signals(out, data)["declarants"]
    assert report["top_k"]["precision"] == report["top_k"]["recall"] == 1.0
    assert report["planted_ranked"] == 6
