"""The register snapshot of a monthly increment: the previous snapshot with this month's
changes, and the truth of those changes.

Changes of one month, drawn from their own random stream (seed, month):
- new persons: drawn as a base block draws them (make_persons), alive, entering the fund:
  30 or under that year, or born abroad (any age); appended as a new register file; a candidate whose NIR the register (or a merged-away entry) ever held is
  skipped, so no number is reused; their register duplicates are planted as in the base;
- deaths: of persons with one register entry and no death date, dated within the month;
- corrections: one identity field of an entry rewritten (its last name: one character
  changed; its birth date: another day of the same month, since the NIR encodes year and
  month). The base register is error-free, so a correction is modelled as a change of the
  field: to the linkage either direction (a fix or a new error) is an entry that changed;
- merges: a register duplicate (an entry planted for a person who has another) is removed.
  The surviving entry is the one registered first: the earliest in register order (file,
  then row); the base writes a person's entry before its duplicate, and increments append.

Every change is a row of ``truth_register_changes/``: month, kind (new_person, death,
correction, merge), register_nir (the entry added, dead, corrected or removed),
surviving_nir (merges), field (corrections) and true_nir (the person).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nirlink.kernels import InputError

from ._columns import write_dataset
from ._describe import Described, format_month
from ._identity import GROUP_ABROAD, REGISTER_SCHEMA, Persons, make_persons, register_table
from ._noise import _typo

__all__ = ["IncrementRates", "Snapshot", "CHANGES", "CHANGES_SCHEMA", "REGISTER_STRINGS", "TRUTH_STRINGS",
           "build_snapshot", "register_truth"]

CHANGES = "truth_register_changes"
NEW_PERSON_MAX_AGE = 30  # new persons: young entrants, or persons born abroad of any age
REGISTER_STRINGS = ["nir", "birth_date", "birth_place", "last_name", "usage_name", "first_names", "nir_kind"]
TRUTH_STRINGS = ["source", "register_nir", "true_nir", "nir_noise"]
CHANGES_SCHEMA = pa.schema([
    pa.field("month", pa.string(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),
    pa.field("register_nir", pa.string(), nullable=False),
    pa.field("surviving_nir", pa.string()),
    pa.field("field", pa.string()),
    pa.field("true_nir", pa.string(), nullable=False),
])


@dataclass(frozen=True)
class IncrementRates:
    """Register changes of one month (at least one of each kind when there is a candidate)."""

    new_persons: float = 0.003  # of the register's persons
    deaths: float = 0.0008  # of the living persons (about 1% a year)
    corrections: float = 0.0005  # of the persons
    merges: float = 0.1  # of the duplicate entries still in the register

    @classmethod
    def from_config(cls) -> IncrementRates:
        """The rates of ``nirlink.synth.increment`` (engine/nirlink.yaml)."""
        from nirlink.engine import _config

        conf = dict(_config.get("synth.increment") or {})
        rates = cls(**{f.name: float(conf[f.name.replace("_", "-")]) for f in fields(cls)
                       if f.name.replace("_", "-") in conf})
        bad = [f"increment.{f.name.replace('_', '-')} must be within [0, 1], got {getattr(rates, f.name)!r}"
               for f in fields(cls) if not 0 <= getattr(rates, f.name) <= 1]
        if bad:
            raise InputError("invalid synthetic data settings: " + "; ".join(bad))
        return rates


@dataclass
class Snapshot:
    new_file: str  # the register file of the new persons (career, resource and truth use its name too)
    new_persons: Persons
    new_register: pa.Table  # their register rows
    new_register_person: np.ndarray  # person index (in new_persons) of each of those rows
    survivors: pa.Table  # true_nir, death (date32) of every person of the snapshot
    removed: set[str]  # NIRs merged away, this month and before (never reused)
    changes: dict[str, int]
    persons: int


def register_truth(register_nir: pa.Array, true_nir: pa.Array) -> pa.Table:
    """Truth rows of register entries (the layout of truth/: source 'register', no record id)."""
    n = len(register_nir)
    return pa.table({
        "source": pa.array(["register"] * n, pa.string()),
        "record_id": pa.nulls(n, pa.int64()),
        "register_nir": register_nir.cast(pa.string()),
        "true_nir": true_nir.cast(pa.string()),
        "nir_noise": pa.nulls(n, pa.string()),
        "identity_version": pa.nulls(n, pa.int64()),
    })


def _read(prev: Described, names: list[str]) -> tuple[list[pa.Table], list[pa.Table]]:
    regs, truths = [], []
    for name in names:
        reg = pq.read_table(prev.root / "register" / name)
        if reg.schema.names != REGISTER_SCHEMA.names:
            raise InputError(f"{prev.root / 'register' / name}: columns {reg.schema.names}, expected {REGISTER_SCHEMA.names}")
        reg = reg.cast(REGISTER_SCHEMA)
        tpath = prev.root / "truth" / name
        if not tpath.exists():
            raise InputError(f"{tpath}: missing (the truth of the register file {prev.root / 'register' / name})")
        t = pq.read_table(tpath, columns=["source", "register_nir", "true_nir"])
        t = t.filter(pc.equal(t.column("source"), "register"))
        if t.num_rows != reg.num_rows or not t.column("register_nir").equals(reg.column("nir")):
            raise InputError(f"{tpath}: its register rows do not match {prev.root / 'register' / name} row for row")
        regs.append(reg)
        truths.append(t)
    return regs, truths


def _merged_before(prev: Described) -> set[str]:
    out: set[str] = set()
    for d in prev.chain():
        for path in sorted((d.root / CHANGES).glob("*.parquet")):
            t = pq.read_table(path, columns=["kind", "register_nir"])
            out.update(t.filter(pc.equal(t.column("kind"), "merge")).column("register_nir").to_pylist())
    return out


def _pick(rng: np.random.Generator, candidates: np.ndarray, rate: float, of: int) -> np.ndarray:
    k = min(len(candidates), max(1, int(round(rate * of))))
    return np.sort(rng.choice(candidates, k, replace=False)) if k else candidates[:0]


def _subset(persons: Persons, idx: np.ndarray) -> Persons:
    take = pa.array(idx)
    values = {}
    for name, v in vars(persons).items():
        values[name] = v.take(take) if isinstance(v, (pa.Array, pa.ChunkedArray)) else v[idx]
    return Persons(**values)


def _new_persons(rng: np.random.Generator, n: int, params, taken: set[str], year: int) -> Persons:
    """``n`` persons whose NIRs (and duplicates' NIRs) the register never held, alive, entering
    the fund: young (``NEW_PERSON_MAX_AGE`` or under in ``year``) or born abroad (any age)."""
    draw = 6 * n + 20
    for _ in range(8):
        cand = make_persons(rng, draw, block=0, n_blocks=1, p=params)
        nir = cand.nir.to_pylist()
        dup = cand.dup_nir.to_pylist()
        entering = (cand.birth_year >= year - NEW_PERSON_MAX_AGE) | (cand.place_group == GROUP_ABROAD)
        ok = entering & np.array([a not in taken and (b is None or b not in taken) for a, b in zip(nir, dup)], bool)
        got = _subset(cand, np.flatnonzero(ok)[:n])
        if len(got) == n:
            break
        draw *= 4
    else:
        raise InputError(f"could not draw {n} new persons with NIRs the register never held")
    got.death_year[:] = 0
    got.death_ordinal[:] = -1
    return got


def _days_in(month: int) -> int:
    y, m = divmod(month + 1, 12)
    return int((np.datetime64(f"{y:04d}-{m + 1:02d}-01") - np.datetime64(format_month(month) + "-01")).astype(int))


def build_snapshot(prev: Described, out: Path, month: int, *, seed: int, tag: int,
                   rates: IncrementRates) -> Snapshot:
    """Write ``out/register`` and the register rows of ``out/truth`` (one file per file of the
    previous snapshot, the new persons' file excepted: see Snapshot) and ``out/truth_register_changes``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, tag, 1]))
    names = prev.register_files
    if not names:
        raise InputError(f"{prev.root / 'register'}: no part-*.parquet file")
    regs, truths = _read(prev, names)
    sizes = np.array([r.num_rows for r in regs])
    reg = pa.concat_tables(regs)
    truth = pa.concat_tables(truths)
    true_nir = np.asarray(truth.column("true_nir").to_pylist(), object)
    reg_nir = np.asarray(reg.column("nir").to_pylist(), object)
    _, first, inverse, counts = np.unique(true_nir, return_index=True, return_inverse=True, return_counts=True)
    rows = np.arange(len(true_nir))
    survivor = first[inverse]
    single = counts[inverse] == 1
    alive = reg.column("death_date").is_null().to_numpy(zero_copy_only=False)
    n_persons = len(first)

    merged = _pick(rng, np.flatnonzero(survivor != rows), rates.merges, int((survivor != rows).sum()))
    dying = _pick(rng, np.flatnonzero(single & alive), rates.deaths, int((alive & (survivor == rows)).sum()))
    not_dying = np.setdiff1d(np.flatnonzero(single), dying)
    corrected = _pick(rng, not_dying, rates.corrections, n_persons)

    # deaths, within the month
    first_day = int(np.datetime64(format_month(month) + "-01").astype("datetime64[D]").astype(np.int64))
    death = reg.column("death_date").cast(pa.int32()).to_numpy(zero_copy_only=False)
    death = np.where(alive, -1, np.nan_to_num(death, nan=-1)).astype(np.int64)
    death[dying] = first_day + rng.integers(0, _days_in(month), len(dying))
    # corrections: the last name (one typo) or the birth day
    last = np.asarray(reg.column("last_name").to_pylist(), object)
    birth = np.asarray(reg.column("birth_date").to_pylist(), object)
    fields_changed = np.where(rng.random(len(corrected)) < 0.5, "last_name", "birth_date").astype(object)
    u = rng.random((len(corrected), 3))
    for k, i in enumerate(corrected.tolist()):
        y, m, d = (int(x) for x in birth[i].split("-"))
        if fields_changed[k] == "birth_date" and m > 0 and d > 0:
            dim = _days_in(y * 12 + m - 1)
            shift = 1 + int(u[k, 0] * (dim - 1))  # 1 .. dim-1 days later, around the month: another day
            birth[i] = f"{y:04d}-{m:02d}-{(d - 1 + shift) % dim + 1:02d}"
        else:
            fields_changed[k] = "last_name"
            new = _typo(*u[k].tolist(), last[i])
            last[i] = new if new != last[i] else last[i] + "E"
    reg = reg.set_column(reg.schema.get_field_index("death_date"), "death_date",
                         pa.array(death.astype(np.int32), pa.int32(), mask=death < 0).cast(pa.date32()))
    reg = reg.set_column(reg.schema.get_field_index("last_name"), "last_name", pa.array(last, pa.string()))
    reg = reg.set_column(reg.schema.get_field_index("birth_date"), "birth_date", pa.array(birth, pa.string()))
    reg = reg.cast(REGISTER_SCHEMA)

    # the snapshot's files: the previous ones, changed, without the merged-away entries
    keep = np.ones(len(rows), bool)
    keep[merged] = False
    (out / "register").mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    bounds = np.r_[0, np.cumsum(sizes)]
    for k, name in enumerate(names):
        sel = pa.array(np.flatnonzero(keep[bounds[k]:bounds[k + 1]]) + bounds[k])
        write_dataset(reg.take(sel), out / "register" / name, REGISTER_STRINGS)
        t = truth.take(sel)
        write_dataset(register_truth(t.column("register_nir").combine_chunks(), t.column("true_nir").combine_chunks()),
                      out / "truth" / name, TRUTH_STRINGS)

    removed = _merged_before(prev) | set(reg_nir[merged].tolist())
    taken = set(reg_nir.tolist()) | removed
    new_rng = np.random.default_rng(np.random.SeedSequence([seed, tag, 2]))
    persons = _new_persons(new_rng, max(1, int(round(rates.new_persons * n_persons))), prev.params, taken,
                           month // 12)
    new_reg, new_person, _ = register_table(persons)
    new_file = f"part-{int(names[-1][5:10]) + 1:05d}.parquet"
    write_dataset(new_reg, out / "register" / new_file, REGISTER_STRINGS)

    canonical = persons.nir.take(pa.array(new_person))
    kinds = (["new_person"] * new_reg.num_rows + ["death"] * len(dying) + ["correction"] * len(corrected)
             + ["merge"] * len(merged))
    changes = pa.table({
        "month": pa.array([format_month(month)] * len(kinds), pa.string()),
        "kind": pa.array(kinds, pa.string()),
        "register_nir": pa.concat_arrays([new_reg.column("nir").combine_chunks(),
                                          pa.array(reg_nir[np.r_[dying, corrected, merged]].tolist(), pa.string())]),
        "surviving_nir": pa.array([None] * (len(kinds) - len(merged)) + reg_nir[survivor[merged]].tolist(),
                                  pa.string()),
        "field": pa.array([None] * (new_reg.num_rows + len(dying)) + fields_changed.tolist() + [None] * len(merged),
                          pa.string()),
        "true_nir": pa.concat_arrays([canonical.cast(pa.string()),
                                      pa.array(true_nir[np.r_[dying, corrected, merged]].tolist(), pa.string())]),
    }, schema=CHANGES_SCHEMA)
    (out / CHANGES).mkdir(parents=True, exist_ok=True)
    write_dataset(changes, out / CHANGES / new_file, ["month", "kind", "register_nir", "surviving_nir", "field",
                                                      "true_nir"])

    # every person of the snapshot with its death date (from its surviving entry)
    alive_new = np.full(len(persons), -1, np.int64)
    survivors = pa.table({
        "true_nir": pa.concat_arrays([pa.array(true_nir[first].tolist(), pa.string()), persons.nir.cast(pa.string())]),
        "death": pa.array(np.r_[death[first], alive_new], pa.int64()),
    })
    counts_by = {"new_person": new_reg.num_rows, "death": len(dying), "correction": len(corrected),
                 "merge": len(merged)}
    return Snapshot(new_file, persons, new_reg, new_person, survivors, removed, counts_by,
                    n_persons + len(persons))
