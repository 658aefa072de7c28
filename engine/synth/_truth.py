"""The truth of a synthetic dataset joined onto its career and resource rows: the input of the
aggregate stage before linkage (tests and benchmarks)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from nirlink.kernels import InputError

__all__ = ["attach_truth", "write_parquet_plain"]


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
    described = root / "_synth.json"
    if described.is_file():
        import json

        summary = json.loads(described.read_text(encoding="utf-8"))
        for key, what in (("increment_of", "an increment"), ("union_of", "a union of increments")):
            if summary.get(key):
                raise InputError(f"{root} is {what}: the truth is attached to a base dataset only (its rows' "
                                 "persons are not all in the register file of the same name)")
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


