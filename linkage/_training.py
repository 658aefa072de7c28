"""Phase 4 of the link stage: training untrained models on a bounded sample of birth years."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._buckets import write_arrow
from ._config import LinkConfig
from ._exact_u import exact_u_counts, exact_u_from_counts
from ._frequencies import global_tf
from ._model import ModelSpec
from ._prepare import LINK_COLUMNS
from ._register import register_files
from ._signatures import signature_files
from ._em import combine_sessions, em_session
from ._splink import finish_training, train
from ._u import estimate_us, u_comparisons
from ._tasks import Progress, cancel_tasks, run_tasks, submit_tasks, wait_tasks

__all__ = ["train_models", "model_frequencies"]


def _year_counts(f: str) -> tuple[dict[int, int], int]:
    """The rows of file ``f`` per birth year, and all its rows (a null birth year included)."""
    t = pq.read_table(f, columns=["birth_year"], use_threads=False)
    vc = pc.value_counts(pc.drop_null(t.column("birth_year")))
    return {int(v): int(c) for v, c in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())}, t.num_rows


def _take(f: str, specs: list[tuple]) -> list[tuple[Any, int, Any, int]]:
    """Per spec (years, fraction, seed, em_fraction, out) of ``specs``: the rows of file ``f``
    with a birth year in ``years``, of which a uniform random share ``em_fraction`` (for EM),
    and a uniform random share ``fraction`` of all its rows (for u), each part with its rows;
    all from one read of the file (the register serves every model). ``out``: the parts are
    written there (``_spill``, ``out`` + "-em.arrow" and "-u.arrow") and their paths returned
    instead of the tables."""
    t = pq.read_table(f, columns=LINK_COLUMNS.names, use_threads=False)
    parts = []
    for years, fraction, seed, em_fraction, out in specs:
        in_years = t.filter(pc.fill_null(pc.is_in(t.column("birth_year"), value_set=pa.array(years, pa.int16())),
                                          False))
        if em_fraction < 1.0:  # another draw than u's (seed + 1)
            in_years = in_years.filter(uniform_mask(in_years.column("unique_id"), em_fraction, seed + 1))
        u = t.filter(uniform_mask(t.column("unique_id"), fraction, seed))
        if out is None:
            parts.append((in_years, in_years.num_rows, u, u.num_rows))
        else:
            parts.append((_spill(Path(out + "-em.arrow"), in_years), in_years.num_rows,
                          _spill(Path(out + "-u.arrow"), u), u.num_rows))
    return parts


def uniform_mask(ids: pa.ChunkedArray | pa.Array, fraction: float, seed: int) -> np.ndarray:
    """Rows kept by a uniform draw of share ``fraction``: a row is kept when a 64-bit mix
    (splitmix64's finaliser) of its id and the seed falls below ``fraction`` of the range, so the
    draw depends on the ids alone, not on how the rows are split into files or tasks."""
    if fraction >= 1.0:
        return np.ones(len(ids), dtype=bool)
    with np.errstate(over="ignore"):
        z = np.asarray(ids.to_numpy() if isinstance(ids, pa.ChunkedArray) else ids.to_numpy(zero_copy_only=False),
                       dtype=np.int64).view(np.uint64) + np.uint64(0x9E3779B97F4A7C15) * np.uint64(seed + 1)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z < np.uint64(int(fraction * 2.0**64) if fraction > 0 else 0)


def _pick_years(counts: dict[int, int], max_rows: int, seed: int) -> list[int]:
    """Birth years holding at most ``max_rows`` register rows (at least one band), drawn as
    random bands of ``YEAR_BAND`` consecutive years: the records of a year either side join
    the sample (``_sample``), and whole bands keep those neighbours few."""
    bands: dict[int, list[int]] = {}
    for y in sorted(counts):
        bands.setdefault(y // YEAR_BAND, []).append(y)
    order = sorted(bands)
    np.random.default_rng(seed).shuffle(order)
    chosen, total = [], 0
    for b in order:
        rows = sum(counts[y] for y in bands[b])
        if chosen and total + rows > max_rows:
            continue
        chosen.extend(bands[b])
        total += rows
    return sorted(chosen)


YEAR_BAND = 5


# the register sample of an exact u is counted in this many parts, one task each: counts are
# integers, so their sum does not depend on the number of parts or on the order they finish in.
# One: at the built-in models' 5,000 rows, a part's fixed cost (reading the register's bodies)
# is a third of the whole (2 parts: 1.6 s each, 1 part: 2.1 s, at 200k persons)
EXACT_U_PARTS = 1
# defaults of the training recipe's sample bounds (a model's `training` may set its own)
SAMPLE_MAX_REGISTER_ROWS = 300_000
U_SAMPLE_ROWS = 50_000
# the records of the EM sample at most: at 200k persons the identity model's 30,000 register
# rows of two bands came with 127-131k records (kept whole); at 2M persons one band was
# 154k register rows with 922k records, and EM took 112 s
SAMPLE_MAX_RECORD_ROWS = 150_000


def _spill(path: Path, table: pa.Table | None) -> str | None:
    """``table`` written once as the Arrow file ``path`` (in the link stage's scratch), for the
    training tasks to read: its path. Measured at 200k persons (2 workers): broadcasting
    the 97 MB record sample with ``client.scatter`` took 1.5-4.4 s each time, twice per
    training (once per batch), with the workers idle; writing it takes 0.1 s and mapping it
    nothing. The file holds names and birth dates: it stays in the job's private directory and
    is removed with the scratch once training is done. Compressed (zstd): uncompressed, the
    samples were 161 MB at 200k persons, the link stage's peak of disk (0.55x the input on top
    of the ingested rows); each task then decompresses its copy instead of mapping it."""
    if table is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    write_arrow(path, table)
    return str(path)


def _mapped(sample) -> pa.Table | None:
    """A sample as a task receives it: the table, the path of its Arrow file (``_spill``), or a
    list of those parts (one per input file, in the files' order) concatenated."""
    if isinstance(sample, list):
        return pa.concat_tables([_mapped(part) for part in sample])
    if isinstance(sample, str):
        with pa.memory_map(sample) as source:
            return pa.ipc.open_file(source).read_all()
    return sample


def _u_task(kind: str, model: ModelSpec, comparison: str | list[str], left, right, tf, reg_files: list[str],
            part: int, threads: int, memory_limit: str | None):
    """One task of the u batch: a part of an exact u count (``comparison``), or the sampled u
    of a model's comparisons (a list of them, estimated together: estimate_us)."""
    left, right = _mapped(left), _mapped(right)
    t = model.training
    if kind == "exact":
        return exact_u_counts(model, comparison, reg_files, sample=int(t.get("u_exact_sample", 50_000)),
                              seed=int(t.get("seed", 42)), part=(part, EXACT_U_PARTS), threads=threads,
                              memory_limit=memory_limit)
    return estimate_us(model, left, right, tf, comparison, threads=threads, memory_limit=memory_limit)


def _fixed_u(model: ModelSpec, exact: list[tuple[str, dict]]) -> dict[str, dict[str, Any]]:
    """Per exactly counted comparison of ``model``, its u (``exact_u_from_counts``) from the
    counts of its parts (``exact``: (comparison, counts) in the parts' order)."""
    parts: dict[str, list[dict]] = {}
    for comp, counts in exact:
        parts.setdefault(comp, []).append(counts)
    return {comp: exact_u_from_counts(model, comp, counts) for comp, counts in parts.items()}


def _own(jobs: list[tuple], results: list, name: str) -> tuple[list[tuple[str, Any]], Any]:
    """Model ``name``'s u task results (or their futures): its exact counts, (comparison,
    counts) in the parts' order, and its sampled u (None: no sampled comparison)."""
    exact = [(comp, r) for (kind, n, comp), r in zip(jobs, results) if n == name and kind == "exact"]
    sampled = next((r for (kind, n, _), r in zip(jobs, results) if n == name and kind == "sampled"), None)
    return exact, sampled


def _em_task(kind: str, model: ModelSpec, index: int, left, right, tf, threads, memory_limit, prior_scale,
             exact: list[tuple[str, dict]], sampled: dict | None):
    """One task of the EM batch: a session of a model's EM, or the whole training of a model
    whose recipe has no EM session (u and prior only). ``exact`` and ``sampled``: the results of
    the model's own u tasks (Dask hands them over once those tasks are done, so a session
    starts when its model's u is known, whatever the other models' u tasks still do)."""
    left, right = _mapped(left), _mapped(right)
    fixed_u = {comp: info["u"] for comp, info in _fixed_u(model, exact).items()}
    u = sampled or {}
    if kind == "session":
        return em_session(model, index, left, right, tf, threads=threads, memory_limit=memory_limit, fixed_u=fixed_u,
                          u=u)
    return _train_task(model, left, right, tf, threads, memory_limit, prior_scale, fixed_u, u)


def _train_task(model: ModelSpec, left: pa.Table, right: pa.Table | None, tf, threads, memory_limit, prior_scale,
                fixed_u=None, u=None):
    return train(model, left, right, tf, threads=threads, memory_limit=memory_limit, prior_scale=prior_scale,
                 fixed_u=fixed_u, u=u)


def _samples(models: dict[str, ModelSpec], reg_files: list[str], sig_files: list[str], client, progress,
             scratch: Path | None = None) -> dict[str, dict[str, Any]]:
    """The training samples of each model, in two batches of tasks for all the models: the
    rows per birth year of every input file, then each file's sample rows (``_take``).

    For EM: the register rows (right) of a random set of birth years holding at most
    ``sample_max_register_rows`` rows and, for a link, the records (left) born in those years or
    a year either side (a record's birth year is off by one in about 1% of declarations: without
    the neighbours those matches would leave the sample and the 'one field off' level's m with
    them, 4x too low at 50,000 rows). The sample so keeps every match of its register rows, and
    the prior found on it is rescaled by the share of the left rows it holds (``prior_scale``).
    A band of a large register holds more than the bound (at 2M persons, 154k register rows
    and 922k records): then a uniform draw of each side's rows of those years, at most
    ``sample_max_register_rows`` register rows and ``sample_max_record_rows`` records. Both
    sides drawn independently keep the matches a uniform share of the pairs (matches and pairs
    both scale by the product of the two shares), so EM sees the same mix of matches and
    non-matches, and the prior found on the draw is that of the whole years: rescaled by the
    share of the records those years hold, as before.
    For u: a uniform random draw of at most ``u_sample_rows`` rows of each side (u is about
    random pairs: in a year subset two rows are born the same year far more often).

    Each sample ("left", "right", "u_left", "u_right"; "right" and "u_right" None for a
    dedupe) is the list of its parts, one per input file in the files' order: tables, or with
    ``scratch`` the paths of the Arrow files the tasks wrote there (``_mapped`` reads either);
    "rows" holds each sample's rows. Measured at 200k persons (2 workers): one batch a side
    and a model, the parts sent back to be joined and written here, took 1.0-1.5 s with the
    workers mostly idle; the two batches, about a third of it."""
    if not models:
        return {}
    link = any(m.link_type == "link_only" for m in models.values())
    files = list(reg_files) + (list(sig_files) if link else [])
    counted = run_tasks(client, _year_counts, [(f,) for f in files], name="training-sample-years", progress=progress)
    reg_counts, sig_counts = Counter(), Counter()
    for i, (c, _) in enumerate(counted):
        (reg_counts if i < len(reg_files) else sig_counts).update(c)
    n_right_full = sum(reg_counts.values())  # the register rows with a birth year
    n_left_full = sum(n for c, n in counted[len(reg_files):])
    plans: dict[str, dict[str, Any]] = {}
    specs: dict[str, list[tuple]] = {}  # per file, what each model takes from it
    wanted: dict[str, list[tuple[str, str]]] = {}  # per file, the (model, side) of each spec
    for name, model in models.items():
        t = model.training
        seed = int(t.get("seed", 42))
        max_right = int(t.get("sample_max_register_rows", SAMPLE_MAX_REGISTER_ROWS))
        years = _pick_years(reg_counts, max_right, seed)
        u_rows = int(t.get("u_sample_rows", U_SAMPLE_ROWS))
        n_right_years = sum(reg_counts[y] for y in years)
        subset = len(years) < len(reg_counts)
        sides = [("r", reg_files, n_right_full, years, min(1.0, max_right / max(n_right_years, 1)))]
        if model.link_type == "link_only":
            near = sorted({y + d for y in years for d in (-1, 0, 1)})
            n_left_years = sum(sig_counts.get(y, 0) for y in near)
            max_left = int(t.get("sample_max_record_rows", SAMPLE_MAX_RECORD_ROWS))
            sides.append(("l", sig_files, n_left_full, near, min(1.0, max_left / max(n_left_years, 1))))
            prior_scale = n_left_years / max(n_left_full, 1) if subset else None
        else:
            prior_scale = n_right_years / max(n_right_full, 1) if subset else None
        plans[name] = {"years": years, "prior_scale": prior_scale}
        for side, side_files, total, in_years, em_fraction in sides:
            fraction = min(1.0, u_rows / total) if total else 1.0
            for i, f in enumerate(side_files):
                out = str(scratch / f"{name}-{side}-{i}") if scratch is not None else None
                specs.setdefault(f, []).append((in_years, fraction, seed, em_fraction, out))
                wanted.setdefault(f, []).append((name, side))
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    taken = run_tasks(client, _take, [(f, fs) for f, fs in specs.items()], name="training-sample", progress=progress)
    # (model, side) -> its parts in the files' order
    parts: dict[tuple[str, str], list] = {}
    for f, results in zip(specs, taken):
        for key, part in zip(wanted[f], results):
            parts.setdefault(key, []).append(part)
    out: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        mine = {side: parts.get((name, side), []) for side in ("r", "l")}
        em = {side: [p[0] for p in ps] for side, ps in mine.items()}
        u = {side: [p[2] for p in ps] for side, ps in mine.items()}
        rows = {side: (sum(p[1] for p in ps), sum(p[3] for p in ps)) for side, ps in mine.items()}
        if model.link_type == "link_only":
            sample = {"left": em["l"], "right": em["r"], "u_left": u["l"], "u_right": u["r"],
                      "rows": {"left": rows["l"][0], "right": rows["r"][0], "u_left": rows["l"][1],
                               "u_right": rows["r"][1]}}
        else:
            sample = {"left": em["r"], "right": None, "u_left": u["r"], "u_right": None,
                      "rows": {"left": rows["r"][0], "right": rows["r"][0], "u_left": rows["r"][1],
                               "u_right": rows["r"][1]}}
        out[name] = {**plans[name], **sample}
    return out


def _sample(model: ModelSpec, reg_files: list[str], sig_files: list[str], client=None, progress=None) -> dict[str, Any]:
    """One model's training samples (``_samples``) as tables."""
    s = _samples({model.name: model}, reg_files, sig_files, client, progress)[model.name]
    return {**s, **{k: _mapped(s[k]) if s[k] is not None else None for k in ("left", "right", "u_left", "u_right")}}


def model_frequencies(work: Path, models: dict[str, ModelSpec], *, client=None,
                      progress: Progress | None = None) -> dict[str, Any]:
    """Each model's term-frequency tables over the whole register (scoring needs them, trained
    model or not)."""
    reg_files = register_files(work)
    return {name: global_tf(m, reg_files, client, progress) for name, m in models.items()}


def train_models(work: Path, models: dict[str, ModelSpec], cfg: LinkConfig, *, client=None,
                 progress: Progress | None = None, tf: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train untrained models on a bounded sample: all records and register rows of a random set
    of birth years (matches share their birth year, so a year subset keeps them together).

    Tasks, so that the cluster's cores share the work: term frequencies and the samples; then
    the u of each model's sampled comparisons (one task a model, Splink's random sampling)
    with the exact u counts of the declared NIR (in parts), and the expectation maximisation
    of each model, one task per session (linkage/_em.py), each session starting as soon as its
    own model's u tasks are done. Results are combined in the models' and comparisons' order,
    so the trained models do not depend on the cluster. ``tf``: the models' term-frequency tables
    (model_frequencies), computed here when not given."""
    reg_files, sig_files = register_files(work), signature_files(work)
    info: dict[str, Any] = {}
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[f"training.{phase}"] = round(now - clock, 3)
        clock = now

    tf_all = tf
    if tf_all is None:
        tf_all = model_frequencies(work, models, client=client, progress=progress)
        lap("frequencies")
    todo = {name: m for name, m in models.items() if not m.trained}
    info.update({name: {"trained": "given"} for name in models if name not in todo})
    jobs, args = [], []
    opts = (cfg.duckdb_threads, cfg.duckdb_memory_limit)
    for name, model in todo.items():  # the exact counts first: the longest tasks
        for comp in model.training.get("u_exact", []):
            for part in range(EXACT_U_PARTS):
                jobs.append(("exact", name, comp))
                args.append(("exact", model, comp, None, None, None, reg_files, part, *opts))
    # the tasks of both batches read the samples from files the sampling tasks wrote in the
    # scratch (without a cluster: the tables themselves). The exact counts read the register,
    # not the samples, but started before the sampling they ran later: a worker takes a second
    # task while it runs one (the scheduler's worker-saturation), and the sampling's tasks
    # queued behind the 1.5 s count (at 200k persons: training 4.2-4.5 s -> 4.2-5.2 s)
    scratch = work / "tmp" / "training"
    samples = _samples(todo, reg_files, sig_files, client, progress, scratch if client is not None else None)
    lap("sample")
    for name, model in todo.items():  # a model's sampled comparisons in one task (see estimate_us)
        exact = set(model.training.get("u_exact", []))
        sampled = [c for c in u_comparisons(model.splink_settings()) if c not in exact]
        if sampled:
            jobs.append(("sampled", name, None))
            args.append(("sampled", model, sampled, samples[name]["u_left"], samples[name]["u_right"],
                         tf_all[name], reg_files, 0, *opts))
    # the u tasks are started without waiting for them: each EM task takes its own model's u
    # results as arguments and starts once they are done. Two batches with a barrier between
    # them left a core idle for ~1 s of the ~6 s of training at 200,000 persons (the register
    # model's EM waited for the identity model's exact u count, the longest u task)
    if progress:
        progress("training-u", 0, len(args))
    u_results = submit_tasks(client, _u_task, args, name="training-u")
    em_jobs, em_args = [], []
    for name, model in todo.items():
        exact, sampled = _own(jobs, u_results, name)
        sessions = len(model.training.get("em_blocking", []))
        for index in range(sessions) if sessions else [0]:
            em_jobs.append(name)
            em_args.append(("session" if sessions else "whole", model, index, samples[name]["left"],
                            samples[name]["right"], tf_all[name], *opts, samples[name]["prior_scale"],
                            exact, sampled))
    try:
        results = run_tasks(client, _em_task, em_args, name="training-em", progress=progress)
    except BaseException as exc:
        cancel_tasks(client, u_results, drain=isinstance(exc, Exception))  # they read the samples' scratch
        raise
    u_results = wait_tasks(client, u_results, name="training-u")  # on a failure it cancels the others itself
    if progress:
        progress("training-u", len(args), len(args))
    for name, model in todo.items():
        u_info = _fixed_u(model, _own(jobs, u_results, name)[0])
        info[name] = {"u_exact": u_info} if u_info else {}
    for name, model in todo.items():
        s = samples[name]
        mine = [r for n, r in zip(em_jobs, results) if n == name]
        if model.training.get("em_blocking"):  # the sessions' results, in the recipe's order
            settings = finish_training(model, combine_sessions(mine), prior_scale=s["prior_scale"])
        else:
            settings = mine[0]
        model.splink = settings
        rows = s["rows"]
        info[name] = {"sample_years": s["years"], "sample_left_rows": rows["left"],
                      "sample_right_rows": rows["right"], "u_sample_left_rows": rows["u_left"],
                      "u_sample_right_rows": rows["u_right"],
                      "probability_two_random_records_match": settings["probability_two_random_records_match"],
                      "em_sessions": len(model.training.get("em_blocking", [])), **info[name]}
    lap("u_em")
    shutil.rmtree(scratch, ignore_errors=True)
    return {"training": {name: info[name] for name in models}, "tf": tf_all, "timings_s": timings}
