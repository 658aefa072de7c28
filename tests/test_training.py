"""Training in parallel tasks: the u of each comparison estimated apart equals Splink's u for
all of them at once; the exact NIR u counted in parts equals the count in one piece; EM
sessions run apart and combined agree with Splink's sequence of sessions; the trained models
are the same bytes in process and on the cluster."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nirlink.linkage import LinkConfig, identity_model, register_model
from nirlink.linkage._exact_u import exact_u, exact_u_counts, exact_u_from_counts
from nirlink.linkage._frequencies import global_tf
from nirlink.linkage._register import register_files
from nirlink.linkage._signatures import signature_files
from nirlink.linkage._splink import duckdb_connection, make_linker, train
from nirlink.linkage._training import _sample, train_models
from nirlink.linkage._u import estimate_u, estimate_us, u_comparisons


def _model(name: str = "identity"):
    """A shipped model with fewer random pairs for u (200k: seconds, not a minute)."""
    model = identity_model() if name == "identity" else register_model()
    model.training = {**model.training, "u_max_pairs": 200_000}
    return model


@pytest.fixture(scope="module")
def sample(job_run):
    """The identity model's training sample of the session's job (its published link stage)."""
    _, out, _ = job_run
    work = out / "link"
    model = _model()
    tf = global_tf(model, register_files(work), None, None)
    s = _sample(model, register_files(work), signature_files(work), None, None)
    return work, model, tf, s["left"], s["right"]


def _weights(settings: dict) -> dict[tuple[str, str], float]:
    return {(c["output_column_name"], lv["label_for_charts"]): math.log2(lv["m_probability"] / lv["u_probability"])
            for c in settings["comparisons"] for lv in c["comparison_levels"] if not lv.get("is_null_level")}


def test_u_of_each_comparison_apart_equals_splink_all_at_once(sample):
    _, model, tf, left, right = sample
    with duckdb_connection() as con:
        linker, _ = make_linker(con, model.splink_settings(), [left, right], tf)
        linker.training.estimate_u_using_random_sampling(max_pairs=float(model.training["u_max_pairs"]),
                                                         seed=int(model.training["seed"]))
        together = linker.misc.save_model_to_json()
    names = u_comparisons(model.splink_settings())
    assert names == [c.name for c in model.comparisons]  # nothing fixed in the bare settings
    for comp in together["comparisons"]:
        apart = estimate_u(model, left, right, tf, comp["output_column_name"])
        assert apart == [lv.get("u_probability") for lv in comp["comparison_levels"]]
        assert any(v is not None for v in apart)
    # a subset of them in one sampling (what a training task runs) estimates the same values
    some = names[1:]
    assert estimate_us(model, left, right, tf, some) == {
        c["output_column_name"]: [lv.get("u_probability") for lv in c["comparison_levels"]]
        for c in together["comparisons"] if c["output_column_name"] in some}
    with pytest.raises(KeyError, match="no comparison"):
        estimate_us(model, left, right, tf, ["no_such_comparison"])


def test_exact_u_counted_in_parts_equals_one_count(sample):
    work, model, *_ = sample
    reg = register_files(work)
    whole = exact_u(model, "nir", reg, sample=2_000, seed=7)
    parts = [exact_u_counts(model, "nir", reg, sample=2_000, seed=7, part=(i, 3)) for i in range(3)]
    assert sum(p["sample_rows"] for p in parts) == whole["sample_rows"] == 2_000
    assert min(p["sample_rows"] for p in parts) > 0  # really split
    assert exact_u_from_counts(model, "nir", list(reversed(parts))) == whole


def test_exact_u_counts_of_the_kernel_equal_duckdbs(sample, monkeypatch):
    """The pairs within two edits found by kernels/_edits.py give the counts of the SQL that
    computed every pair's edit distance in DuckDB (the path of non-ASCII bodies)."""
    import nirlink.linkage._exact_u as exact_module

    work, model, *_ = sample
    reg = register_files(work)
    kernel = exact_u_counts(model, "nir", reg, sample=3_000, seed=11)
    assert sum(kernel["counts"].values()) > 0
    monkeypatch.setattr(exact_module, "_strings", lambda table: None)
    assert exact_u_counts(model, "nir", reg, sample=3_000, seed=11) == kernel


def test_exact_u_against_a_draw_of_the_register(sample):
    """Counted against at most ``register_rows`` rows: the whole register when it is no larger
    (the same result), else a draw: sample x drawn pairs less the sample rows drawn, each
    level's count at most the whole register's, the best-filled level's u within sampling
    error of the whole register's."""
    work, model, *_ = sample
    reg = register_files(work)
    n = exact_u(model, "nir", reg, sample=1, seed=7)["register_rows"]
    whole = exact_u(model, "nir", reg, sample=n, seed=7)  # every pair of the register
    assert whole["pairs"] == n * (n - 1)
    assert exact_u(model, "nir", reg, sample=n, seed=7, register_rows=n) == whole
    half = exact_u(model, "nir", reg, sample=n, seed=7, register_rows=n // 2)
    assert half["register_rows"] == n
    assert half["pairs"] == n * (n // 2) - n // 2  # every drawn row is in the sample
    assert all(c <= whole["pairs_counted"][level] for level, c in half["pairs_counted"].items())
    level, most = max(whole["pairs_counted"].items(), key=lambda kv: kv[1])
    assert most >= 50, whole["pairs_counted"]  # the session's small register: ~40 expected in the draw
    assert 0.6 < half["u"][level] / whole["u"][level] < 1.6, (half["u"][level], whole["u"][level])


def test_parallel_em_sessions_agree_with_splinks_sequence(sample, dask_client, tmp_path):
    """Splink's sequence of sessions (train) and the link stage's sessions as parallel tasks
    give the same weights within 0.05 bit on every level that is no veto; the models trained
    in process and on the cluster are the same bytes."""
    work, model, tf, left, right = sample
    fixed = {"nir": exact_u(model, "nir", register_files(work), sample=int(model.training["u_exact_sample"]),
                            seed=int(model.training["seed"]))["u"]}
    sequential = _weights(train(model, left, right, tf, fixed_u=fixed))
    runs = {}
    for where, client in (("process", None), ("cluster", dask_client)):
        models = {"identity": _model(), "register": _model("register")}
        result = train_models(Path(work), models, LinkConfig(), client=client)
        runs[where] = json.dumps({n: m.to_json() for n, m in models.items()}, sort_keys=True)
        assert result["training"]["identity"]["em_sessions"] == len(model.training["em_blocking"])
        assert set(result["timings_s"]) == {"training.frequencies", "training.sample", "training.u_em"}
        assert not (Path(work) / "tmp" / "training").exists()  # the samples' files (cluster) are removed
    assert runs["process"] == runs["cluster"]
    parallel = _weights(json.loads(runs["process"])["identity"]["splink"])
    assert sequential.keys() == parallel.keys()
    compared = 0
    for key, w in sequential.items():
        if abs(w) < 30:
            assert abs(parallel[key] - w) < 0.05, (key, w, parallel[key])
            compared += 1
    assert compared >= 15


def test_one_em_session_apart_is_splinks_session(sample):
    """With a single EM blocking rule, the session run as a task and combined is exactly what
    Splink's own training gives."""
    from nirlink.linkage._em import combine_sessions, em_session
    from nirlink.linkage._splink import finish_training

    _, _, tf, left, right = sample
    model = _model()
    model.training = {**model.training, "em_blocking": [["first_name_key", "birth_year", "birth_month"]],
                      "u_exact": [], "m_fixed": {}}
    u = {c: estimate_u(model, left, right, tf, c) for c in u_comparisons(model.splink_settings())}
    ours = finish_training(model, combine_sessions([em_session(model, 0, left, right, tf, u=u)]))
    assert ours == train(model, left, right, tf, u=u)


# ------------------------------------------------------------------ the bounded samples


def _splitmix_keeps(uid: int, fraction: float, seed: int) -> bool:
    """Oracle of uniform_mask in plain Python integers: splitmix64's finaliser of the id plus
    the seed's multiple of the golden gamma, below ``fraction`` of 2**64."""
    if fraction >= 1.0:
        return True
    mask = (1 << 64) - 1
    z = ((uid & mask) + 0x9E3779B97F4A7C15 * (seed + 1)) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    z ^= z >> 31
    return z < int(fraction * 2.0**64)


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=200),
       fraction=st.floats(0, 1), seed=st.integers(0, 2**20), cut=st.integers(0, 200))
def test_uniform_draw_is_a_function_of_the_id_alone(ids, fraction, seed, cut):
    import numpy as np
    import pyarrow as pa

    from nirlink.linkage._training import uniform_mask

    arr = pa.array(ids, pa.int64())
    mask = uniform_mask(arr, fraction, seed)
    assert mask.tolist() == [_splitmix_keeps(i, fraction, seed) for i in ids]
    # split into two files, the same rows are drawn
    chunked = pa.chunked_array([arr[:cut], arr[cut:]], pa.int64())
    assert np.array_equal(uniform_mask(chunked, fraction, seed), mask)
    # a smaller share keeps a subset of a larger one
    assert not (uniform_mask(arr, fraction / 2, seed) & ~mask).any()


def test_uniform_draw_keeps_its_share():
    import numpy as np
    import pyarrow as pa

    from nirlink.linkage._training import uniform_mask

    ids = pa.array(np.arange(200_000, dtype=np.int64) * 7919)  # ids in a regular pattern
    for fraction in (0.01, 0.25, 0.5):
        kept = uniform_mask(ids, fraction, 42).sum()
        assert abs(kept - fraction * 200_000) < 5 * (fraction * 200_000) ** 0.5  # five standard deviations


def test_years_are_drawn_as_whole_bands_up_to_the_bound():
    from nirlink.linkage._training import YEAR_BAND, _pick_years

    counts = {y: 100 + (y % 7) * 10 for y in range(1931, 2006)}
    for max_rows, seed in ((1_000, 1), (3_000, 2), (50, 3), (10**6, 4)):
        years = _pick_years(counts, max_rows, seed)
        bands = {y // YEAR_BAND for y in years}
        assert years == sorted(y for y in counts if y // YEAR_BAND in bands)  # whole bands only
        rows = sum(counts[y] for y in years)
        first_band = min(sum(c for y, c in counts.items() if y // YEAR_BAND == b) for b in bands)
        assert rows <= max_rows or len(bands) == 1 and rows == first_band  # at least one band
        assert _pick_years(counts, max_rows, seed) == years
    assert _pick_years(counts, 10**6, 4) == sorted(counts)


def test_sample_keeps_the_records_a_year_either_side_and_scales_the_prior(job_run):
    """A subset sample: the register rows of whole bands of birth years, the records of those
    years and of a year either side, uniform u samples of the bounded size; the prior is rescaled
    by the share of records kept, and lands near the prior trained on every row."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    _, out, _ = job_run
    work = out / "link"
    reg, sig = register_files(work), signature_files(work)
    register = pq.read_table(reg)
    signatures = pq.read_table(sig)
    model = _model()
    model.training = {**model.training, "sample_max_register_rows": register.num_rows // 3, "u_sample_rows": 500}
    s = _sample(model, reg, sig, None, None)
    years = set(s["years"])
    assert 0 < s["right"].num_rows <= register.num_rows // 3
    assert sorted(s["right"]["unique_id"].to_pylist()) == sorted(
        r["unique_id"] for r in register.select(["unique_id", "birth_year"]).to_pylist() if r["birth_year"] in years)
    near = {y + d for y in years for d in (-1, 0, 1)}
    expected = [r["unique_id"] for r in signatures.select(["unique_id", "birth_year"]).to_pylist()
                if r["birth_year"] in near]
    assert sorted(s["left"]["unique_id"].to_pylist()) == sorted(expected)
    assert s["prior_scale"] == s["left"].num_rows / signatures.num_rows
    for side, table in (("u_left", signatures), ("u_right", register)):
        assert abs(s[side].num_rows - 500) < 5 * 500 ** 0.5
        assert set(s[side]["unique_id"].to_pylist()) <= set(table["unique_id"].to_pylist())
    assert pc.min(s["u_left"]["birth_year"]).as_py() < min(years) or pc.max(s["u_left"]["birth_year"]).as_py() > max(years)


def test_a_band_larger_than_the_bounds_is_drawn_from_on_both_sides(job_run):
    """A band holding more rows than the bounds (a large register): a uniform draw of each
    side's rows of the chosen years (the ids' hash, seed + 1), about the bound of each, and the
    prior rescaled by the share of records those years hold, not by the draw's."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nirlink.linkage._training import uniform_mask

    _, out, _ = job_run
    work = out / "link"
    reg, sig = register_files(work), signature_files(work)
    register = pq.read_table(reg, columns=["unique_id", "birth_year"])
    signatures = pq.read_table(sig, columns=["unique_id", "birth_year"])
    model = _model()
    model.training = {**model.training, "sample_max_register_rows": 100, "sample_max_record_rows": 300,
                      "u_sample_rows": 500}
    s = _sample(model, reg, sig, None, None)
    seed = int(model.training["seed"])
    years = set(s["years"])
    near = {y + d for y in years for d in (-1, 0, 1)}
    for side, table, wanted, bound in (("right", register, years, 100), ("left", signatures, near, 300)):
        rows = [r for r in table.to_pylist() if r["birth_year"] in wanted]
        assert len(rows) > 2 * bound, (side, len(rows))  # the band is larger than the bound
        ids = pa.array([r["unique_id"] for r in rows], pa.int64())
        keep = uniform_mask(ids, bound / len(rows), seed + 1)
        assert sorted(s[side]["unique_id"].to_pylist()) == sorted(np.asarray(ids)[keep].tolist())
        assert abs(s[side].num_rows - bound) < 5 * bound ** 0.5
    assert s["prior_scale"] == sum(1 for y in signatures["birth_year"].to_pylist() if y in near) / signatures.num_rows


def test_a_failing_u_task_fails_the_training_and_leaves_nothing_running(sample, dask_client, monkeypatch):
    """The EM sessions take the u tasks' futures: a u task's error reaches the caller (not a
    hang, not an EM session run without its u), and no task of the training is left behind."""
    import nirlink.linkage._training as training

    work, *_ = sample

    def broken(kind, *args):
        raise ValueError(f"u task failed on purpose ({kind})")

    monkeypatch.setattr(training, "_u_task", broken)
    models = {"identity": _model(), "register": _model("register")}
    with pytest.raises(ValueError, match="u task failed on purpose"):
        train_models(Path(work), models, LinkConfig(), client=dask_client)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
            "training" in str(k) for k in dask_client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.tasks))):
        time.sleep(0.1)
    assert not [k for k in dask_client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.tasks))
                if "training" in str(k)]
    assert all(not m.trained for m in models.values())
