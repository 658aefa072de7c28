"""`nirlink synth`: synthetic register, careers, resources and truth, in independent blocks.

Block b of P draws its persons from ``np.random.SeedSequence([seed, b])``, then their rows
part by part (``PART_PERSONS`` persons each, from ``SeedSequence([seed, b, k])``) and writes
its own file of each dataset (a row group or more per part), so blocks run as independent
Dask tasks with bounded memory, and the same seed and partition count give byte-identical
files whatever the number of workers.
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

from ._columns import PartWriter, dates, gather_versions, siret_column, version_dictionary, write_dataset
from ._heap import kept_heap
from ._identity import make_persons, register_table
from ._noise import NIR_NOISE, declare
from ._params import SynthParams
from ._records import CAREER_KINDS, PAYERS, RESOURCE_KINDS, VersionSpace, make_careers, make_resources
from ._signals import bad_employers, planting_plan, signal_truth

__all__ = ["DATASETS", "CAREER_SCHEMA", "RESOURCE_SCHEMA", "TRUTH_SCHEMA", "generate_block", "plan_blocks", "synth"]

DATASETS = ("register", "career", "resource", "truth")
SIGNAL_TRUTH = "truth_signals"  # the signals' truth (engine/synth/_signals.py), beside truth/
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
# the truth as the generator builds it: its string columns dictionary-encoded (_truth_table),
# every column optional in the files as they always were (readers concatenate them with others)
_TRUTH_ARROW = pa.schema([pa.field(f.name, pa.dictionary(pa.int8() if f.name in ("source", "nir_noise") else pa.int32(),
                                                         pa.string()) if f.name in ("source", "true_nir", "nir_noise")
                                   else f.type) for f in TRUTH_SCHEMA])


def generate_block(out: str, block: int, n_blocks: int, first_person: int, n_persons: int, total_persons: int,
                   params: SynthParams) -> dict[str, int]:
    """Generate block ``block`` (persons first_person .. +n_persons) and write its part files.

    The Parquet writes run on a writer thread (pyarrow releases the GIL) while the block
    goes on generating: its persons come in parts of ``PART_PERSONS``, each written as row
    groups of the block's files while the next part is drawn. glibc's heap is kept meanwhile
    (_heap.py: freed arrays reused instead of faulted in again)."""
    with kept_heap(), ThreadPoolExecutor(1, thread_name_prefix="synth-writer") as writer:
        pending: list[Future] = []

        def write(fn, *args) -> None:
            pending.append(writer.submit(fn, *args))

        summary = _generate_block(write, out, block, n_blocks, n_persons, total_persons, params)
        for f in pending:
            f.result()
    return summary


# Persons drawn at a time inside a block (a constant: the values of a seed depend on it). A
# block of 10,000 persons generated ~15% less CPU per row than one of 40,000 (its arrays
# stay in cache) and bounds a worker's memory whatever the block size.
PART_PERSONS = 10_000


def _generate_block(write, out: str, block: int, n_blocks: int, n_persons: int, total_persons: int,
                    params: SynthParams) -> dict[str, int]:
    rng = np.random.default_rng(np.random.SeedSequence([params.seed, block]))
    persons = make_persons(rng, n_persons, block=block, n_blocks=n_blocks, p=params)
    name = f"part-{block:05d}.parquet"
    root = Path(out)
    reg, reg_person, reg_dup = register_table(persons)
    write(write_dataset, reg, root / "register" / name, ["nir", "birth_date", "birth_place", "last_name",
                                                          "usage_name", "first_names", "nir_kind"])
    n_employers = max(10, int(total_persons * params.employers_per_1000_persons / 1000))
    bad = bad_employers(params.seed, n_employers, params.bad_declarant_rate)
    string_cols = ["declared_nir", "last_name", "first_name", "birth_date", "kind"]
    files = {"career": PartWriter(root / "career" / name, string_cols + ["employer_id"], CAREER_SCHEMA),
             "resource": PartWriter(root / "resource" / name, string_cols + ["payer_id"], RESOURCE_SCHEMA),
             "truth": PartWriter(root / "truth" / name, TRUTH_STRINGS),
             SIGNAL_TRUTH: PartWriter(root / SIGNAL_TRUTH / name, ["rule"])}
    counts = {"career": 0, "resource": 0, "versions": 0, "used": 0}
    bounds = list(range(0, n_persons, PART_PERSONS)) + [n_persons]
    for k in range(len(bounds) - 1):
        tables, n_versions, n_used = _generate_part(persons.part(bounds[k], bounds[k + 1]), params, seed=(params.seed, block, k),
                                n_employers=n_employers, bad=bad, first_ids=(counts["career"], counts["resource"]),
                                first_version=counts["versions"], tag=np.int64(block) << 32,
                                bad_sirets=siret_column(bad) if block == 0 and k == len(bounds) - 2 else None)
        for dataset, table in tables.items():
            write(files[dataset].write, table)
        counts["career"] += tables["career"].num_rows
        counts["resource"] += tables["resource"].num_rows
        counts["versions"] += n_versions
        counts["used"] += n_used
    # the register rows' truth, after the records': every register row -> its person
    n_reg = len(reg_person)
    write(files["truth"].write, pa.Table.from_batches([pa.record_batch([
        pa.DictionaryArray.from_arrays(pa.array(np.full(n_reg, 2, np.int8)), SOURCES),
        pa.nulls(n_reg, pa.int64()), reg.column("nir").combine_chunks(),
        pa.DictionaryArray.from_arrays(pa.array(reg_person.astype(np.int32)), persons.nir),
        pa.DictionaryArray.from_arrays(pa.nulls(n_reg, pa.int8()), NOISE_NAMES),
        pa.nulls(n_reg, pa.int64())], schema=_TRUTH_ARROW)]))
    for f in files.values():
        write(f.close)
    nc, nr = counts["career"], counts["resource"]
    return {"block": block, "persons": n_persons, "register": reg.num_rows, "career": nc, "resource": nr,
            "truth": nc + nr + reg.num_rows, "versions": counts["used"]}


def _generate_part(persons, params: SynthParams, *, seed: tuple[int, int, int], n_employers: int, bad: np.ndarray,
                   first_ids: tuple[int, int], first_version: int, tag: np.int64,
                   bad_sirets: pa.Array | None) -> tuple[dict[str, pa.Table], int, int]:
    """The career, resource, truth and signal-truth rows of ``persons`` (a part of a block),
    from the part's own random streams: ``SeedSequence(seed)``, and for the planted cases
    ``SeedSequence(seed + (14,))``. Record ids and identity versions continue from
    ``first_ids`` and ``first_version`` (the block's previous parts). Returns the tables, the
    number of identity versions and of those the rows use."""
    rng = np.random.default_rng(np.random.SeedSequence(list(seed)))
    n_persons = len(persons)
    versions = VersionSpace(n_persons, n_employers)
    careers = make_careers(rng, persons, p=params, n_employers=n_employers, versions=versions)
    # cases for the signals stage, from their own random stream (engine/synth/_signals.py)
    plant_rng = np.random.default_rng(np.random.SeedSequence([*seed, 14]))
    fy, fm = (int(x) for x in params.first_resource_month.split("-"))
    ly, lm = (int(x) for x in params.last_resource_month.split("-"))
    last_month = ly * 12 + lm - 1
    planting = planting_plan(plant_rng, persons, p=params, first_month=fy * 12 + fm - 1, last_month=last_month)
    resources = make_resources(rng, persons, careers, p=params, n_employers=n_employers, versions=versions,
                               planting=planting)
    v_person, v_decl = versions.arrays()
    used = np.zeros(len(v_person), bool)
    used[careers.version] = True
    used[resources.version] = True
    is_bad = np.zeros(n_employers + len(PAYERS), bool)
    is_bad[bad] = True
    ident = declare(rng, persons, v_person, used, params.noise, heavy=is_bad[v_decl],
                    heavy_scale=params.bad_declarant_noise_scale, heavy_rng=plant_rng)

    # employers and payers as SIRET dictionaries (those the part's rows use), each pool
    # index's rank among them; the identity columns' values, per version (_columns.py)
    pool_used = np.zeros(n_employers + len(PAYERS), bool)
    pool_used[careers.employer] = True
    pool_used[resources.payer] = True
    rank = (np.cumsum(pool_used) - 1).astype(np.int32)
    sirets = siret_column(np.flatnonzero(pool_used))
    by_version = np.empty((len(v_person), 4), np.int32)
    values = [version_dictionary(idx, d, used, by_version[:, c]) for c, (idx, d) in enumerate(
        ((ident.nir_idx, ident.nir_dict), (ident.last_idx, ident.last_dict), (ident.first_idx, ident.first_dict),
         (ident.birth_idx, ident.birth_dict)))]

    def identity_columns(version):
        cols = gather_versions(version, by_version, values)
        return dict(zip(("declared_nir", "last_name", "first_name", "birth_date"), cols))

    def declarants(pool_index):
        return pa.DictionaryArray.from_arrays(pa.array(rank[pool_index]), sirets)

    nc = len(careers.person)
    block_ids = tag  # record ids: the block in the high bits, the row within the block below
    career_ids = block_ids + first_ids[0] + np.arange(nc, dtype=np.int64)
    career = pa.table({
        "record_id": pa.array(career_ids),
        **identity_columns(careers.version),
        "employer_id": declarants(careers.employer),
        "year": pa.array(careers.year),
        "start_date": dates(careers.start),
        "end_date": dates(careers.end),
        "kind": pa.DictionaryArray.from_arrays(pa.array(careers.kind), pa.array(CAREER_KINDS)),
        "gross_salary": pa.array(careers.gross, mask=np.isnan(careers.gross)),
        "days": pa.array(careers.days),
    })

    nr = len(resources.person)
    resource_ids = RESOURCE_FLAG + block_ids + first_ids[1] + np.arange(nr, dtype=np.int64)
    resource = pa.table({
        "record_id": pa.array(resource_ids),
        **identity_columns(resources.version),
        "payer_id": declarants(resources.payer),
        "period": dates(resources.period),
        "kind": pa.DictionaryArray.from_arrays(pa.array(resources.kind), pa.array(RESOURCE_KINDS)),
        "amount": pa.array(resources.amount),
    })

    # truth: every record -> the person's canonical NIR, its NIR noise and identity version
    # (unique in the block: the block in the high bits); one chunk per source (the writer takes
    # them as they are: no concatenation), the dictionary columns sharing their dictionaries
    chunks = []
    for s, (ids, person, version) in enumerate(((career_ids, careers.person, careers.version),
                                                (resource_ids, resources.person, resources.version))):
        n = len(ids)
        chunks.append(pa.record_batch([
            pa.DictionaryArray.from_arrays(pa.array(np.full(n, s, np.int8)), SOURCES),
            pa.array(ids), pa.nulls(n, pa.string()),
            pa.DictionaryArray.from_arrays(pa.array(person), persons.nir),
            pa.DictionaryArray.from_arrays(pa.array(ident.nir_noise[version]), NOISE_NAMES),
            pa.array(version + (tag + first_version))], schema=_TRUTH_ARROW))
    signals = signal_truth(persons, careers.person, careers.start,
                           {"person": resources.person, "period": resources.period, "kind": resources.kind,
                            "amount": resources.amount}, v_person, ident.nir_noise, ident.other_person, used,
                           last_month=last_month, bad_sirets=bad_sirets)
    return ({"career": career, "resource": resource, "truth": pa.Table.from_batches(chunks), SIGNAL_TRUTH: signals},
            len(v_person), int(used.sum()))


NOISE_NAMES = pa.array(["none", *NIR_NOISE])
SOURCES = pa.array(["career", "resource", "register"])
TRUTH_STRINGS = ["source", "register_nir", "true_nir", "nir_noise"]


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


