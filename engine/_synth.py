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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit
import pyarrow as pa
import pyarrow.parquet as pq

from kernels import InputError, format_digits

from . import _config
from ._synth_identity import make_persons, register_table
from ._synth_noise import declare
from ._synth_records import CAREER_KINDS, PAYERS, RESOURCE_KINDS, VersionSpace, make_careers, make_resources

__all__ = ["NoiseRates", "SynthParams", "synth", "generate_block", "CAREER_SCHEMA", "RESOURCE_SCHEMA", "TRUTH_SCHEMA",
           "DATASETS"]

DATASETS = ("register", "career", "resource", "truth")
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


def _key(name: str) -> str:
    return name.replace("_", "-")


@dataclass(frozen=True)
class NoiseRates:
    missing_nir: float = 0.03
    wrong_key: float = 0.01
    transposed_digits: float = 0.005
    other_person_nir: float = 0.003
    nir_without_key: float = 0.005
    name_typo: float = 0.03
    first_name_typo: float = 0.02
    accents_lost: float = 0.3
    names_swapped: float = 0.01
    usage_name: float = 0.5
    all_first_names: float = 0.2
    day_month_swapped: float = 0.01
    birth_year_off: float = 0.01
    case_and_spacing: float = 0.05

    def scaled(self, factor: float) -> NoiseRates:
        """Every error rate times ``factor`` (capped at 1); behaviours (usage name, all first names) unchanged."""
        keep = {"usage_name", "all_first_names"}
        return NoiseRates(**{f.name: getattr(self, f.name) if f.name in keep else min(1.0, getattr(self, f.name) * factor)
                             for f in fields(self)})


@dataclass(frozen=True)
class SynthParams:
    seed: int = 0
    career_rows_per_person: float = 37
    resource_rows_per_person: float = 90
    first_career_year: int = 1990
    last_career_year: int = 2025
    first_resource_month: str = "2019-01"
    last_resource_month: str = "2025-12"
    born_abroad_share: float = 0.08
    overseas_share: float = 0.03
    unknown_month_share: float = 0.005
    temporary_share: float = 0.03
    register_duplicate_rate: float = 0.01
    employers_per_1000_persons: float = 40
    noise: NoiseRates = field(default_factory=NoiseRates)

    @classmethod
    def from_config(cls, **overrides: Any) -> SynthParams:
        """Parameters from dask.config ``nirlink.synth`` with keyword overrides."""
        conf = dict(_config.get("synth") or {})
        noise_conf = dict(conf.pop("noise", {}) or {})
        kwargs = {}
        for f in fields(cls):
            if f.name == "noise":
                continue
            if _key(f.name) in conf:
                kwargs[f.name] = conf[_key(f.name)]
        noise = NoiseRates(**{f.name: float(noise_conf[_key(f.name)]) for f in fields(NoiseRates) if _key(f.name) in noise_conf})
        kwargs["noise"] = noise
        kwargs.update(overrides)
        params = cls(**kwargs)
        params.check()
        return params

    def check(self) -> None:
        errors = []
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.endswith("share") or f.name.endswith("rate"):
                if not 0 <= v <= 1:
                    errors.append(f"{_key(f.name)} must be within [0, 1], got {v!r}")
        for f in fields(self.noise):
            v = getattr(self.noise, f.name)
            if not 0 <= v <= 1:
                errors.append(f"noise.{_key(f.name)} must be within [0, 1], got {v!r}")
        if sum(getattr(self.noise, k) for k in ("missing_nir", "wrong_key", "transposed_digits", "other_person_nir",
                                                  "nir_without_key")) > 1:
            errors.append("the NIR noise rates (missing, wrong key, transposed, other person, without key) sum above 1")
        if self.temporary_share > self.born_abroad_share or self.unknown_month_share > self.born_abroad_share:
            errors.append("temporary-share and unknown-month-share must not exceed born-abroad-share")
        if self.born_abroad_share + self.overseas_share > 1:
            errors.append("born-abroad-share + overseas-share must not exceed 1")
        if not 1990 <= self.first_career_year <= self.last_career_year <= 2026:
            errors.append("careers must lie within 1990-2026 (the reference tables) with first <= last")
        for name in ("first_resource_month", "last_resource_month"):
            text = getattr(self, name)
            try:
                y, m = (int(x) for x in text.split("-"))
                if not (1990 <= y <= 2026 and 1 <= m <= 12):
                    raise ValueError
            except ValueError:
                errors.append(f"{_key(name)} must be YYYY-MM within 1990-2026, got {text!r}")
        if self.career_rows_per_person < 0 or self.resource_rows_per_person < 0:
            errors.append("rows per person must be >= 0")
        if errors:
            raise InputError("invalid synthetic data settings: " + "; ".join(errors))


def _siret(index: np.ndarray) -> pa.Array:
    """14-digit SIRETs that pass the Luhn check (SIREN and the full SIRET), one per pool index."""
    index = np.asarray(index, np.int64)
    siren8 = (index * 48271 + 12345678) % 10**8  # a bijection of the first 10**8 indices
    siren = siren8 * 10 + _luhn_digit(siren8, 8)
    nic4 = 1 + (index % 97)
    partial = siren * 10**4 + nic4
    full = partial * 10 + _luhn_digit(partial, 13)
    return format_digits(full, 14)


def _luhn_digit(values: np.ndarray, n_digits: int) -> np.ndarray:
    """Check digit c such that the number (values * 10 + c) passes the Luhn test."""
    total = np.zeros(len(values), np.int64)
    v = values.copy()
    for pos in range(n_digits):  # pos 0 = rightmost digit of values, doubled
        d = v % 10
        v //= 10
        if pos % 2 == 0:
            d = d * 2
            d = np.where(d > 9, d - 9, d)
        total += d
    return (10 - total % 10) % 10


@njit(nogil=True, cache=True)
def _remap(indices, to_unique, n_unique, out):
    """Dictionary indices onto distinct values, renumbered to the values used (-1 stays null)."""
    used = np.zeros(n_unique, np.bool_)
    for i in range(indices.shape[0]):
        if indices[i] >= 0:
            used[to_unique[indices[i]]] = True
    remap = np.empty(n_unique, np.int32)
    k = 0
    for u in range(n_unique):
        remap[u] = k
        if used[u]:
            k += 1
    for i in range(indices.shape[0]):
        out[i] = remap[to_unique[indices[i]]] if indices[i] >= 0 else 0
    return used


def _dict(indices: np.ndarray, dictionary: pa.Array, cache: dict | None = None) -> pa.DictionaryArray:
    """A dictionary array over distinct values, holding only the entries ``indices`` use (-1 = null).

    Not cosmetic: handed a dictionary with repeated values (two persons both named MARIE),
    the Parquet writer falls back to plain pages, slower, and its bytes are not reproducible.
    ``cache`` keeps the encoding of dictionaries used for several columns (one block's).
    """
    cached = cache.get(id(dictionary)) if cache is not None else None
    if cached is None or cached[0] is not dictionary:
        enc = dictionary.dictionary_encode()
        cached = (dictionary, enc.dictionary, enc.indices.to_numpy(zero_copy_only=False).astype(np.int64))
        if cache is not None:
            cache[id(dictionary)] = cached
    _, values, to_unique = cached
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    out = np.empty(len(indices), np.int32)
    used = _remap(indices, to_unique, len(values), out)
    mask = indices < 0
    idx = pa.array(out, mask=mask) if mask.any() else pa.array(out)
    return pa.DictionaryArray.from_arrays(idx, values.filter(pa.array(used)))


def _dates(days: np.ndarray) -> pa.Array:
    return pa.array(days.astype(np.int32)).cast(pa.date32())


_WRITE = dict(compression="snappy", store_schema=False, write_statistics=True)


def _write(table: pa.Table, path: Path, string_columns: list[str]) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    pq.write_table(table, tmp, use_dictionary=string_columns, **_WRITE)
    os.replace(tmp, path)


def generate_block(out: str, block: int, n_blocks: int, first_person: int, n_persons: int, total_persons: int,
                   params: SynthParams) -> dict[str, int]:
    """Generate block ``block`` (persons first_person .. +n_persons) and write its part files."""
    rng = np.random.default_rng(np.random.SeedSequence([params.seed, block]))
    persons = make_persons(rng, n_persons, block=block, n_blocks=n_blocks, p=params)
    n_employers = max(10, int(total_persons * params.employers_per_1000_persons / 1000))
    versions = VersionSpace(n_persons, n_employers)
    careers = make_careers(rng, persons, p=params, n_employers=n_employers, versions=versions)
    resources = make_resources(rng, persons, careers, p=params, n_employers=n_employers, versions=versions)
    v_person, v_decl = versions.arrays()
    used = np.zeros(len(v_person), bool)
    used[careers.version] = True
    used[resources.version] = True
    ident = declare(rng, persons, v_person, used, params.noise)

    # employers and payers as SIRET dictionaries (only those used by the block)
    emp_used = np.unique(np.concatenate([careers.employer, resources.payer]))
    sirets = _siret(emp_used)
    name = f"part-{block:05d}.parquet"
    root = Path(out)

    reg, reg_person, reg_dup = register_table(persons)
    _write(reg, root / "register" / name, ["nir", "birth_date", "birth_place", "last_name", "usage_name",
                                           "first_names", "nir_kind"])

    string_cols = ["declared_nir", "last_name", "first_name", "birth_date", "kind"]

    encoded: dict = {}  # dictionaries shared by the career and resource columns, encoded once

    def identity_columns(version):
        return {
            "declared_nir": _dict(ident.nir_idx[version], ident.nir_dict, encoded),
            "last_name": _dict(ident.last_idx[version], ident.last_dict, encoded),
            "first_name": _dict(ident.first_idx[version], ident.first_dict, encoded),
            "birth_date": _dict(ident.birth_idx[version], ident.birth_dict, encoded),
        }

    nc = len(careers.person)
    career_ids = (np.int64(block) << 32) + np.arange(nc, dtype=np.int64)
    career = pa.table({
        "record_id": pa.array(career_ids),
        **identity_columns(careers.version),
        "employer_id": _dict(np.searchsorted(emp_used, careers.employer), sirets),
        "year": pa.array(careers.year),
        "start_date": _dates(careers.start),
        "end_date": _dates(careers.end),
        "kind": _dict(careers.kind.astype(np.int64), pa.array(CAREER_KINDS)),
        "gross_salary": pa.array(careers.gross, mask=np.isnan(careers.gross)),
        "days": pa.array(careers.days),
    })
    _write(career, root / "career" / name, string_cols + ["employer_id"])

    nr = len(resources.person)
    resource_ids = RESOURCE_FLAG + (np.int64(block) << 32) + np.arange(nr, dtype=np.int64)
    resource = pa.table({
        "record_id": pa.array(resource_ids),
        **identity_columns(resources.version),
        "payer_id": _dict(np.searchsorted(emp_used, resources.payer), sirets),
        "period": _dates(resources.period),
        "kind": _dict(resources.kind.astype(np.int64), pa.array(RESOURCE_KINDS)),
        "amount": pa.array(resources.amount),
    })
    _write(resource, root / "resource" / name, string_cols + ["payer_id"])

    # truth: every record -> the person's canonical NIR; every register row -> its person
    canonical = persons.nir
    noise_names = pa.array(["none", "missing-nir", "wrong-key", "transposed-digits", "other-person-nir",
                            "nir-without-key"])
    n_reg = len(reg_person)
    truth = pa.table({
        "source": _dict(np.repeat(np.array([0, 1, 2]), [nc, nr, n_reg]), pa.array(["career", "resource", "register"])),
        "record_id": pa.concat_arrays([pa.array(career_ids), pa.array(resource_ids), pa.nulls(n_reg, pa.int64())]),
        "register_nir": pa.concat_arrays([pa.nulls(nc + nr, pa.string()), reg.column("nir").combine_chunks()]),
        "true_nir": _dict(np.concatenate([careers.person, resources.person, reg_person]).astype(np.int64), canonical),
        "nir_noise": _dict(np.concatenate([ident.nir_noise[careers.version], ident.nir_noise[resources.version],
                                           np.full(n_reg, -1)]).astype(np.int64), noise_names),
        # the declared identity a record carries (one per person and declarant; see VersionSpace)
        "identity_version": pa.array(np.concatenate([careers.version, resources.version, np.full(n_reg, -1)])
                                     + (np.int64(block) << 32), mask=np.repeat([False, True], [nc + nr, n_reg])),
    })
    _write(truth, root / "truth" / name, ["source", "register_nir", "true_nir", "nir_noise"])
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
        for name in (*DATASETS, "_synth.json"):
            target = root / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    for name in DATASETS:
        (root / name).mkdir(parents=True, exist_ok=True)
    per_partition = int(_config.get("synth.persons-per-partition", 50000))
    workers = len(client.scheduler_info().get("workers", {})) if client is not None else 1
    blocks = plan_blocks(persons, partitions, per_partition, min_blocks=max(1, workers))
    n_blocks = len(blocks)
    t0 = time.perf_counter()
    results = []
    from linkage._tasks import run_tasks, without_step

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


def _attach_block(synth_dir: str, out_dir: str, name: str) -> dict[str, int]:
    """One block: career and resource rows with their true person and the person's birth date."""
    import pyarrow.compute as pc

    root = Path(synth_dir)
    truth = pq.read_table(root / "truth" / name, columns=["source", "record_id", "register_nir", "true_nir"])
    register = pq.read_table(root / "register" / name, columns=["nir", "birth_date"])
    birth = register.column("birth_date")
    by = pc.cast(pc.utf8_slice_codeunits(birth, 0, 4), pa.int16())
    bm = pc.cast(pc.utf8_slice_codeunits(birth, 5, 7), pa.int8())
    counts = {}
    for kind in ("career", "resource"):
        rows = pq.read_table(root / kind / name)
        t = truth.filter(pc.equal(truth.column("source"), kind))
        if not t.column("record_id").equals(rows.column("record_id")):
            raise InputError(f"{root / kind / name}: records and truth are not aligned")
        person = t.column("true_nir")
        pos = pc.index_in(person, value_set=register.column("nir"))
        rows = rows.append_column("person", person)
        rows = rows.append_column("person_birth_year", pc.take(by, pos))
        rows = rows.append_column("person_birth_month", pc.take(bm, pos))
        write_parquet_plain(rows, Path(out_dir) / kind / name)
        counts[kind] = rows.num_rows
    return counts


def write_parquet_plain(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    pq.write_table(table, tmp, compression="snappy")
    os.replace(tmp, path)


def attach_truth(synth_dir: str | os.PathLike, out_dir: str | os.PathLike, *, client=None) -> dict[str, int]:
    """Career and resource rows of a synthetic dataset with their true person (``person``) and
    birth year/month: the input of the aggregate stage before linkage, partitioned by person
    (a block's persons are all in its files)."""
    root = Path(synth_dir)
    names = sorted(p.name for p in (root / "career").glob("part-*.parquet"))
    if not names:
        raise InputError(f"{root}: not a synthetic dataset (no career/part-*.parquet)")
    if client is None:
        results = [_attach_block(str(root), str(out_dir), n) for n in names]
    else:
        futures = client.map(_attach_block, [str(root.resolve())] * len(names), [str(Path(out_dir).resolve())] * len(names),
                             names, pure=False)
        results = client.gather(futures)
    return {k: sum(r[k] for r in results) for k in ("career", "resource")}


JOB_TEMPLATE = """# nirlink job for the synthetic dataset in {data} (written by nirlink).
[job]
name = "{name}"
stages = [{stages}]

[[inputs]]
name = "register"
kind = "register"
paths = ["{data}/register"]

[[inputs]]
name = "career"
kind = "career"
paths = ["{data}/career"]

[[inputs]]
name = "resource"
kind = "resource"
paths = ["{data}/resource"]

[output]
directory = "{output}"
{extra}
[cluster]
# address = "tcp://scheduler:8786"   # a running cluster; without it, a local one is started
"""


def write_job_file(data_dir: str | os.PathLike, job_path: str | os.PathLike, *, output: str | os.PathLike,
                   name: str = "synthetic", stages: list[str] | tuple[str, ...] | None = None,
                   extra: str = "") -> Path:
    """A job file that runs the main job (or ``stages``) on a synthetic dataset (paths absolute);
    ``extra`` lines go into its [output] table."""
    from ._spec import STAGES

    job_path = Path(job_path)
    job_path.parent.mkdir(parents=True, exist_ok=True)
    job_path.write_text(JOB_TEMPLATE.format(data=Path(data_dir).resolve().as_posix(), name=name,
                                            output=Path(output).resolve().as_posix(), extra=extra,
                                            stages=", ".join(f'"{s}"' for s in (stages or STAGES))),
                        encoding="utf-8")
    return job_path
