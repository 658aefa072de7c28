"""`nirlink synth`: synthetic register, careers, resources and truth, in independent blocks.

Block b of P draws from ``np.random.SeedSequence([seed, b])`` only and writes its own
part file of each dataset, so blocks run as independent Dask tasks with bounded memory,
and the same seed and partition count give byte-identical files.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from nirlink.engine import _config
from nirlink.kernels import InputError

from ._columns import dates, dictionary_column, siret_column, write_dataset
from ._identity import make_persons, register_table
from ._noise import declare
from ._params import SynthParams
from ._records import CAREER_KINDS, P_PENSION, PAYERS, RESOURCE_KINDS, Resources, VersionSpace, make_careers, make_resources
from ._signals import bad_employers, clip_careers_at_death, plant_resources, signal_truth

__all__ = ["DATASETS", "CAREER_SCHEMA", "RESOURCE_SCHEMA", "TRUTH_SCHEMA", "generate_block", "plan_blocks", "synth"]

DATASETS = ("register", "career", "resource", "truth")
SIGNAL_TRUTH = "truth_signals"  # the signals' truth (engine/synth/_signals.py), beside truth/
ROW_FIELDS = ("person", "version", "employer", "year", "start", "end", "kind", "gross", "days")
RESOURCE_FLAG = 1 << 62

CAREER_SCHEMA = pa.schema([
    pa.field("record_id", pa.int64(), nullable=False),
    pa.field("declared_nir", pa.string()),
    pa.field("last_name", pa.string()),
    pa.field("first_name", pa.string()),
    pa.field("birth_date", pa.string()),
    pa.field("employer_id", pa.string(), nullable=False),
    pa.field("year", pa.int16(), nullable=False),
    pa.field("start_date", pa.date32(), nullable=False),
    pa.field("end_date", pa.date32(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),
    pa.field("gross_salary", pa.float64()),
    pa.field("days", pa.int16(), nullable=False),
])
RESOURCE_SCHEMA = pa.schema([
    pa.field("record_id", pa.int64(), nullable=False),
    pa.field("declared_nir", pa.string()),
    pa.field("last_name", pa.string()),
    pa.field("first_name", pa.string()),
    pa.field("birth_date", pa.string()),
    pa.field("payer_id", pa.string(), nullable=False),
    pa.field("period", pa.date32(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),
    pa.field("amount", pa.float64(), nullable=False),
])
TRUTH_SCHEMA = pa.schema([
    pa.field("source", pa.string(), nullable=False),
    pa.field("record_id", pa.int64()),
    pa.field("register_nir", pa.string()),
    pa.field("true_nir", pa.string(), nullable=False),
    pa.field("nir_noise", pa.string()),
    pa.field("identity_version", pa.int64()),
])


def generate_block(out: str, block: int, n_blocks: int, first_person: int, n_persons: int, total_persons: int,
                   params: SynthParams) -> dict[str, int]:
    """Generate block ``block`` (persons first_person .. +n_persons) and write its part files.

    The Parquet writes run on a writer thread (pyarrow releases the GIL) while the block
    goes on generating the next dataset."""
    with ThreadPoolExecutor(1, thread_name_prefix="synth-writer") as writer:
        pending: list[Future] = []

        def write(table: pa.Table, path: Path, string_columns: list[str]) -> None:
            pending.append(writer.submit(write_dataset, table, path, string_columns))

        summary = _generate_block(write, out, block, n_blocks, n_persons, total_persons, params)
        for f in pending:
            f.result()
    return summary


def _generate_block(write, out: str, block: int, n_blocks: int, n_persons: int, total_persons: int,
                    params: SynthParams) -> dict[str, int]:
    rng = np.random.default_rng(np.random.SeedSequence([params.seed, block]))
    persons = make_persons(rng, n_persons, block=block, n_blocks=n_blocks, p=params)
    n_employers = max(10, int(total_persons * params.employers_per_1000_persons / 1000))
    versions = VersionSpace(n_persons, n_employers)
    careers = make_careers(rng, persons, p=params, n_employers=n_employers, versions=versions)
    resources = make_resources(rng, persons, careers, p=params, n_employers=n_employers, versions=versions)
    # cases for the signals stage, from their own random stream (engine/synth/_signals.py)
    plant_rng = np.random.default_rng(np.random.SeedSequence([params.seed, block, 14]))
    keep = clip_careers_at_death(careers, persons)
    if not keep.all():
        keep = np.flatnonzero(keep)
        for f in ROW_FIELDS:
            setattr(careers, f, getattr(careers, f)[keep])
    fy, fm = (int(x) for x in params.first_resource_month.split("-"))
    ly, lm = (int(x) for x in params.last_resource_month.split("-"))
    last_month = ly * 12 + lm - 1
    planted = plant_resources(plant_rng, resources, persons, p=params, last_month=last_month,
                              first_month=fy * 12 + fm - 1,
                              pension_version=lambda who: versions.payer(who, P_PENSION))
    planted["payer"][planted["payer"] < 0] = n_employers + P_PENSION
    resources = Resources(**planted)
    v_person, v_decl = versions.arrays()
    used = np.zeros(len(v_person), bool)
    used[careers.version] = True
    used[resources.version] = True
    bad = bad_employers(params.seed, n_employers, params.bad_declarant_rate)
    is_bad = np.zeros(n_employers + len(PAYERS), bool)
    is_bad[bad] = True
    ident = declare(rng, persons, v_person, used, params.noise, heavy=is_bad[v_decl],
                    heavy_scale=params.bad_declarant_noise_scale, heavy_rng=plant_rng)

    # employers and payers as SIRET dictionaries (only those used by the block), each row's
    # declarant as its rank among them
    pool_used = np.zeros(n_employers + len(PAYERS), bool)
    pool_used[careers.employer] = True
    pool_used[resources.payer] = True
    emp_used = np.flatnonzero(pool_used)
    rank = np.cumsum(pool_used) - 1
    sirets = siret_column(emp_used)
    name = f"part-{block:05d}.parquet"
    root = Path(out)

    reg, reg_person, reg_dup = register_table(persons)
    write(reg, root / "register" / name, ["nir", "birth_date", "birth_place", "last_name", "usage_name",
                                           "first_names", "nir_kind"])

    string_cols = ["declared_nir", "last_name", "first_name", "birth_date", "kind"]

    encoded: dict = {}  # dictionaries shared by the career and resource columns, encoded once

    def identity_columns(version):
        return {
            "declared_nir": dictionary_column(ident.nir_idx, ident.nir_dict, encoded, rows=version),
            "last_name": dictionary_column(ident.last_idx, ident.last_dict, encoded, rows=version),
            "first_name": dictionary_column(ident.first_idx, ident.first_dict, encoded, rows=version),
            "birth_date": dictionary_column(ident.birth_idx, ident.birth_dict, encoded, rows=version),
        }

    nc = len(careers.person)
    career_ids = (np.int64(block) << 32) + np.arange(nc, dtype=np.int64)
    career = pa.table({
        "record_id": pa.array(career_ids),
        **identity_columns(careers.version),
        "employer_id": dictionary_column(rank, sirets, rows=careers.employer),
        "year": pa.array(careers.year),
        "start_date": dates(careers.start),
        "end_date": dates(careers.end),
        "kind": dictionary_column(careers.kind, pa.array(CAREER_KINDS)),
        "gross_salary": pa.array(careers.gross, mask=np.isnan(careers.gross)),
        "days": pa.array(careers.days),
    })
    write(career, root / "career" / name, string_cols + ["employer_id"])

    nr = len(resources.person)
    resource_ids = RESOURCE_FLAG + (np.int64(block) << 32) + np.arange(nr, dtype=np.int64)
    resource = pa.table({
        "record_id": pa.array(resource_ids),
        **identity_columns(resources.version),
        "payer_id": dictionary_column(rank, sirets, rows=resources.payer),
        "period": dates(resources.period),
        "kind": dictionary_column(resources.kind, pa.array(RESOURCE_KINDS)),
        "amount": pa.array(resources.amount),
    })
    write(resource, root / "resource" / name, string_cols + ["payer_id"])

    # truth: every record -> the person's canonical NIR; every register row -> its person
    canonical = persons.nir
    noise_names = pa.array(["none", "missing-nir", "wrong-key", "transposed-digits", "other-person-nir",
                            "nir-without-key"])
    n_reg = len(reg_person)
    truth = pa.table({
        "source": dictionary_column(np.repeat(np.array([0, 1, 2], np.int8), [nc, nr, n_reg]), pa.array(["career", "resource", "register"])),
        "record_id": pa.concat_arrays([pa.array(career_ids), pa.array(resource_ids), pa.nulls(n_reg, pa.int64())]),
        "register_nir": pa.concat_arrays([pa.nulls(nc + nr, pa.string()), reg.column("nir").combine_chunks()]),
        "true_nir": dictionary_column(np.concatenate([careers.person, resources.person, reg_person]), canonical),
        "nir_noise": dictionary_column(np.concatenate([ident.nir_noise[careers.version], ident.nir_noise[resources.version],
                                           np.full(n_reg, -1, np.int8)]), noise_names),
        # the declared identity a record carries (one per person and declarant; see VersionSpace)
        "identity_version": pa.array(np.concatenate([careers.version, resources.version, np.full(n_reg, -1)])
                                     + (np.int64(block) << 32), mask=np.repeat([False, True], [nc + nr, n_reg])),
    })
    write(truth, root / "truth" / name, ["source", "register_nir", "true_nir", "nir_noise"])
    signals = signal_truth(persons, careers.person, careers.start,
                           {"person": resources.person, "period": resources.period, "kind": resources.kind,
                            "amount": resources.amount}, v_person, ident.nir_noise, ident.other_person, used,
                           last_month=last_month, bad_sirets=siret_column(bad) if block == 0 else None)
    write(signals, root / SIGNAL_TRUTH / name, ["rule"])
    return {"block": block, "persons": n_persons, "register": reg.num_rows, "career": nc, "resource": nr,
            "truth": truth.num_rows, "versions": int(used.sum())}


def plan_blocks(persons: int, partitions: int | None, persons_per_partition: int,
                min_blocks: int = 1) -> list[tuple[int, int]]:
    """(first person, count) of each block: ``partitions`` blocks, or as many as the persons
    per partition setting asks (at least ``min_blocks``, e.g. one per worker)."""
    if persons < 1:
        raise InputError(f"--persons must be at least 1, got {persons}")
    if partitions is None:
        partitions = min(persons, max(min_blocks, -(-persons // persons_per_partition)))
    if partitions < 1:
        raise InputError(f"--partitions must be at least 1, got {partitions}")
    if partitions > persons:
        raise InputError(f"--partitions ({partitions}) cannot exceed --persons ({persons})")
    bounds = np.linspace(0, persons, partitions + 1).round().astype(np.int64)
    return [(int(bounds[i]), int(bounds[i + 1] - bounds[i])) for i in range(partitions)]


def synth(out: str | os.PathLike, *, persons: int, client=None, partitions: int | None = None,
          params: SynthParams | None = None, overwrite: bool = False,
          progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Generate the four datasets under ``out`` on the Dask ``client`` (or in this process).

    Returns the summary also written to ``out/_synth.json``.
    """
    params = params or SynthParams.from_config()
    params.check()
    root = Path(out)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise InputError(f"output directory {root} is not empty (pass overwrite to replace it)")
        for name in (*DATASETS, SIGNAL_TRUTH, "_synth.json"):
            target = root / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    for name in (*DATASETS, SIGNAL_TRUTH):
        (root / name).mkdir(parents=True, exist_ok=True)
    per_partition = int(_config.get("synth.persons-per-partition", 50000))
    workers = len(client.scheduler_info().get("workers", {})) if client is not None else 1
    blocks = plan_blocks(persons, partitions, per_partition, min_blocks=max(1, workers))
    n_blocks = len(blocks)
    t0 = time.perf_counter()
    results = []
    from nirlink.linkage._tasks import run_tasks, without_step

    results = run_tasks(client, generate_block, [(str(root.resolve()), b, n_blocks, first, count, persons, params)
                                                 for b, (first, count) in enumerate(blocks)],
                        name="synth", progress=without_step(progress))
    elapsed = time.perf_counter() - t0
    results.sort(key=lambda r: r["block"])
    totals = {name: sum(r[name] for r in results) for name in ("persons", *DATASETS)}
    summary = {
        "persons": persons,
        "partitions": n_blocks,
        "seed": params.seed,
        "rows": {name: totals[name] for name in DATASETS},
        "career_rows_per_person": totals["career"] / persons,
        "resource_rows_per_person": totals["resource"] / persons,
        "seconds": round(elapsed, 3),
        "params": asdict(params),
        "payers": {name: i for i, name in enumerate(PAYERS)},
        "datasets": {name: str(root / name) for name in DATASETS},
    }
    with open(root / "_synth.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    return summary


