"""Training in parallel tasks: the u of each comparison estimated apart equals Splink's u for
all of them at once; the exact NIR u counted in parts equals the count in one piece; EM
sessions run apart and combined agree with Splink's sequence of sessions; the trained models
are the same bytes in process and on the cluster."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from nirlink.linkage import LinkConfig, identity_model, register_model
from nirlink.linkage._exact_u import exact_u, exact_u_counts, exact_u_from_counts
from nirlink.linkage._frequencies import global_tf
from nirlink.linkage._register import register_files
from nirlink.linkage._signatures import signature_files
from nirlink.linkage._splink import duckdb_connection, make_linker, train
from nirlink.linkage._training import _sample, train_models
from nirlink.linkage._u import estimate_u, u_comparisons


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


def test_exact_u_counted_in_parts_equals_one_count(sample):
    work, model, *_ = sample
    reg = register_files(work)
    whole = exact_u(model, "nir", reg, sample=2_000, seed=7)
    parts = [exact_u_counts(model, "nir", reg, sample=2_000, seed=7, part=(i, 3)) for i in range(3)]
    assert sum(p["sample_rows"] for p in parts) == whole["sample_rows"] == 2_000
    assert min(p["sample_rows"] for p in parts) > 0  # really split
    assert exact_u_from_counts(model, "nir", list(reversed(parts))) == whole


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
        assert set(result["timings_s"]) == {"training.frequencies", "training.sample", "training.u", "training.em"}
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
    ours = finish_training(model, combine_sessions([em_session(model, 0, left, right, tf, u=u)]), left.num_rows,
                           right.num_rows, None)
    assert ours == train(model, left, right, tf, u=u)
