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

from ._config import LinkConfig
from ._exact_u import exact_u_counts, exact_u_from_counts
from ._frequencies import global_tf
from ._model import ModelSpec
from ._prepare import LINK_COLUMNS
from ._register import register_files
from ._signatures import signature_files
from ._em import combine_sessions, em_session
from ._splink import finish_training, train
from ._u import estimate_u, u_comparisons
from ._tasks import Progress, run_tasks

__all__ = ["train_models", "model_frequencies"]


def _year_counts(f: str) -> dict[int, int]:
    t = pq.read_table(f, columns=["birth_year"], use_threads=False)
    vc = pc.value_counts(pc.drop_null(t.column("birth_year")))
    return {int(v): int(c) for v, c in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())}


def _take_years(f: str, years: list[int], columns: list[str] | None = None) -> pa.Table:
    t = pq.read_table(f, use_threads=False)
    t = t.filter(pc.fill_null(pc.is_in(t.column("birth_year"), value_set=pa.array(years, pa.int16())), False))
    return t.select(LINK_COLUMNS.names)


def _pick_years(counts: dict[int, int], max_rows: int, seed: int) -> list[int]:
    years = sorted(counts)
    rng = np.random.default_rng(seed)
    rng.shuffle(years)
    chosen, total = [], 0
    for y in years:
        if chosen and total + counts[y] > max_rows:
            continue
        chosen.append(y)
        total += counts[y]
    return sorted(chosen)


# the register sample of an exact u is counted in this many parts, one task each: counts are
# integers, so their sum does not depend on the number of parts or on the order they finish in
EXACT_U_PARTS = 4


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
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return str(path)


def _mapped(table: pa.Table | str | None) -> pa.Table | None:
    """A sample as a task receives it: the table, or the path of its Arrow file (``_spill``)."""
    if isinstance(table, str):
        with pa.memory_map(table) as source:
            return pa.ipc.open_file(source).read_all()
    return table


def _u_task(kind: str, model: ModelSpec, comparison: str, left, right, tf, reg_files: list[str], part: int,
            threads: int, memory_limit: str | None):
    """One task of the u batch: a part of an exact u count, or a comparison's sampled u."""
    left, right = _mapped(left), _mapped(right)
    t = model.training
    if kind == "exact":
        return exact_u_counts(model, comparison, reg_files, sample=int(t.get("u_exact_sample", 50_000)),
                              seed=int(t.get("seed", 42)), part=(part, EXACT_U_PARTS), threads=threads,
                              memory_limit=memory_limit)
    return estimate_u(model, left, right, tf, comparison, threads=threads, memory_limit=memory_limit)


def _em_task(kind: str, model: ModelSpec, index: int, left, right, tf, threads, memory_limit, full_sizes, fixed_u, u):
    """One task of the EM batch: a session of a model's EM, or the whole training of a model
    whose recipe has no EM session (u and prior only)."""
    left, right = _mapped(left), _mapped(right)
    if kind == "session":
        return em_session(model, index, left, right, tf, threads=threads, memory_limit=memory_limit, fixed_u=fixed_u,
                          u=u)
    return _train_task(model, left, right, tf, threads, memory_limit, full_sizes, fixed_u, u)


def _train_task(model: ModelSpec, left: pa.Table, right: pa.Table | None, tf, threads, memory_limit, full_sizes,
                fixed_u=None, u=None):
    return train(model, left, right, tf, threads=threads, memory_limit=memory_limit, full_sizes=full_sizes,
                 fixed_u=fixed_u, u=u)


def _sample(model: ModelSpec, reg_files: list[str], sig_files: list[str], client, progress) -> dict[str, Any]:
    """The training sample of a model: the register rows (right) and, for a link, the records
    (left) of a random set of birth years, with the full sizes when that is a subset."""
    name = model.name
    counts = Counter()
    for c in run_tasks(client, _year_counts, [(f,) for f in reg_files], name=f"sample-{name}", progress=progress):
        counts.update(c)
    max_rows = int(model.training.get("sample_max_register_rows", 300_000))
    years = _pick_years(counts, max_rows, int(model.training.get("seed", 42)))
    right = pa.concat_tables(run_tasks(client, _take_years, [(f, years) for f in reg_files], name=f"sample-r-{name}"))
    n_right_full = sum(counts.values())
    if model.link_type == "link_only":
        left = pa.concat_tables(run_tasks(client, _take_years, [(f, years) for f in sig_files], name=f"sample-l-{name}"))
        n_left_full = sum(pq.read_metadata(f).num_rows for f in sig_files)
        full = (n_left_full, n_right_full) if len(years) < len(counts) else None
        return {"years": years, "left": left, "right": right, "full": full}
    full = (n_right_full, n_right_full) if len(years) < len(counts) else None
    return {"years": years, "left": right, "right": None, "full": full}


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

    Three batches of tasks, so that the cluster's cores share the work: term frequencies and
    the samples; then the u of every comparison of every model (one task each, Splink's
    random sampling) with the exact u counts of the declared NIR (in parts); then the
    expectation maximisation of each model (its sessions in order, as Splink runs them), one
    task per model. Results are combined in the models' and comparisons' order, so the
    trained models do not depend on the cluster. ``tf``: the models' term-frequency tables
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
    samples = {name: _sample(m, reg_files, sig_files, client, progress) for name, m in todo.items()}
    # the tasks of both batches read the samples from files in the scratch (without a cluster:
    # the tables themselves)
    scratch = work / "tmp" / "training"
    on_workers = {name: {k: _spill(scratch / f"{name}-{k}.arrow", s[k]) if client is not None else s[k]
                         for k in ("left", "right")}
                  for name, s in samples.items()}
    lap("sample")
    jobs, args = [], []
    opts = (cfg.duckdb_threads, cfg.duckdb_memory_limit)
    for name, model in todo.items():  # the exact counts first: the longest tasks
        for comp in model.training.get("u_exact", []):
            for part in range(EXACT_U_PARTS):
                jobs.append(("exact", name, comp))
                args.append(("exact", model, comp, None, None, None, reg_files, part, *opts))
    for name, model in todo.items():
        exact = set(model.training.get("u_exact", []))
        for comp in u_comparisons(model.splink_settings()):
            if comp not in exact:
                jobs.append(("sampled", name, comp))
                args.append(("sampled", model, comp, on_workers[name]["left"], on_workers[name]["right"], tf_all[name],
                             reg_files, 0, *opts))
    results = run_tasks(client, _u_task, args, name="training-u", progress=progress)
    u_all: dict[str, dict[str, list]] = {name: {} for name in todo}
    exact_parts: dict[tuple[str, str], list] = {}
    for (kind, name, comp), res in zip(jobs, results):
        if kind == "exact":
            exact_parts.setdefault((name, comp), []).append(res)
        else:
            u_all[name][comp] = res
    lap("u")
    em_jobs, em_args = [], []
    for name, model in todo.items():
        fixed_u, u_info = {}, {}
        for comp in model.training.get("u_exact", []):
            u_info[comp] = exact_u_from_counts(model, comp, exact_parts[(name, comp)])
            fixed_u[comp] = u_info[comp]["u"]
        info[name] = {"u_exact": u_info} if u_info else {}
        sessions = len(model.training.get("em_blocking", []))
        for index in range(sessions) if sessions else [0]:
            em_jobs.append(name)
            em_args.append(("session" if sessions else "whole", model, index, on_workers[name]["left"],
                            on_workers[name]["right"], tf_all[name], *opts, samples[name]["full"], fixed_u, u_all[name]))
    results = run_tasks(client, _em_task, em_args, name="training-em", progress=progress)
    for name, model in todo.items():
        s = samples[name]
        mine = [r for n, r in zip(em_jobs, results) if n == name]
        if model.training.get("em_blocking"):  # the sessions' results, in the recipe's order
            n_right = s["right"].num_rows if s["right"] is not None else None
            settings = finish_training(model, combine_sessions(mine), s["left"].num_rows, n_right, s["full"])
        else:
            settings = mine[0]
        model.splink = settings
        right = s["right"] if s["right"] is not None else s["left"]
        info[name] = {"sample_years": s["years"], "sample_left_rows": s["left"].num_rows,
                      "sample_right_rows": right.num_rows,
                      "probability_two_random_records_match": settings["probability_two_random_records_match"],
                      "em_sessions": len(model.training.get("em_blocking", [])), **info[name]}
    lap("em")
    shutil.rmtree(scratch, ignore_errors=True)
    return {"training": {name: info[name] for name in models}, "tf": tf_all, "timings_s": timings}
