"""Phase 4 of the link stage: training untrained models on a bounded sample of birth years."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._config import LinkConfig
from ._exact_u import exact_u
from ._frequencies import global_tf
from ._model import ModelSpec
from ._prepare import LINK_COLUMNS
from ._register import register_files
from ._signatures import signature_files
from ._splink import train
from ._tasks import Progress, run_tasks, share

__all__ = ["train_models"]


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


def _train_task(model: ModelSpec, left: pa.Table, right: pa.Table | None, tf, threads, memory_limit, full_sizes,
                fixed_u=None):
    return train(model, left, right, tf, threads=threads, memory_limit=memory_limit, full_sizes=full_sizes,
                 fixed_u=fixed_u)


def train_models(work: Path, models: dict[str, ModelSpec], cfg: LinkConfig, *, client=None,
                 progress: Progress | None = None) -> dict[str, Any]:
    """Train untrained models on a bounded sample: all records and register rows of a random set
    of birth years (matches share their birth year, so a year subset keeps them together)."""
    reg_files, sig_files = register_files(work), signature_files(work)
    info: dict[str, Any] = {}
    tf_all = {name: global_tf(m, reg_files, client, progress) for name, m in models.items()}
    for name, model in models.items():
        if model.trained:
            info[name] = {"trained": "given"}
            continue
        counts = Counter()
        for c in run_tasks(client, _year_counts, [(f,) for f in reg_files], name=f"sample-{name}", progress=progress):
            counts.update(c)
        max_rows = int(model.training.get("sample_max_register_rows", 300_000))
        years = _pick_years(counts, max_rows, int(model.training.get("seed", 42)))
        right = pa.concat_tables(run_tasks(client, _take_years, [(f, years) for f in reg_files], name=f"sample-r-{name}"))
        n_right_full = sum(counts.values())
        if model.link_type == "link_only":
            left_parts = run_tasks(client, _take_years, [(f, years) for f in sig_files], name=f"sample-l-{name}")
            left = pa.concat_tables(left_parts)
            n_left_full = sum(pq.read_metadata(f).num_rows for f in sig_files)
            full = (n_left_full, n_right_full) if len(years) < len(counts) else None
            args = (model, left, right, tf_all[name], cfg.duckdb_threads, cfg.duckdb_memory_limit, full)
        else:
            full = (n_right_full, n_right_full) if len(years) < len(counts) else None
            left = right
            args = (model, right, None, tf_all[name], cfg.duckdb_threads, cfg.duckdb_memory_limit, full)
        fixed_u, u_info = {}, {}
        for comp in model.training.get("u_exact", []):
            res = run_tasks(client, exact_u, [(model, comp, reg_files)], name=f"u-{name}-{comp}", progress=progress,
                            kwargs=dict(sample=int(model.training.get("u_exact_sample", 50_000)),
                                        seed=int(model.training.get("seed", 42)), threads=cfg.duckdb_threads,
                                        memory_limit=cfg.duckdb_memory_limit))[0]
            fixed_u[comp] = res["u"]
            u_info[comp] = res
        args = (*args, fixed_u)
        settings = run_tasks(client, _train_task, [tuple(share(client, a) if isinstance(a, pa.Table) else a
                                                         for a in args)], name=f"train-{name}", progress=progress)[0]
        model.splink = settings
        info[name] = {"sample_years": years, "sample_left_rows": left.num_rows, "sample_right_rows": right.num_rows,
                      "probability_two_random_records_match": settings["probability_two_random_records_match"],
                      **({"u_exact": u_info} if u_info else {})}
    return {"training": info, "tf": tf_all}


