"""`nirlink synth --union LAST --out U`: one dataset holding a base and its increments up to
LAST, to compare a full run on the union with a run on the base followed by the increments.

The union's ``register/`` is LAST's register snapshot (its files copied as they are);
``career/`` and ``resource/`` are every file of the base and of each increment (their
names never repeat along a chain: an increment's files take the next number); ``truth/``
holds, per file name, the truth of those rows and of the snapshot's register entries;
``truth_register_changes/`` every increment's changes. Counts reconcile: the union's rows
are the sum of the parts' rows, its register the last snapshot.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nirlink.kernels import InputError

from ._columns import write_dataset
from ._describe import SYNTH_FILE, describe, format_month
from ._increment import INCREMENT_DATASETS, prepare_output
from ._increment_register import CHANGES, TRUTH_STRINGS

__all__ = ["union"]


def _truth(path: Path, register: bool) -> pa.Table | None:
    if not path.exists():
        return None
    t = pq.read_table(path)
    t = t.filter(pc.equal(t.column("source"), "register") if register else pc.not_equal(t.column("source"), "register"))
    return t.cast(pa.schema([f.with_type(pa.string()) if pa.types.is_dictionary(f.type) else f for f in t.schema]))


def union(last: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False) -> dict[str, Any]:
    """Write the union of the base and every increment up to ``last`` under ``out``; returns
    the summary also written to ``out/_synth.json``."""
    chain = describe(last, what="--union").chain()
    root = Path(out)
    prepare_output(root, INCREMENT_DATASETS, overwrite=overwrite, sources=[d.root for d in chain])
    root = root.resolve()
    final = chain[-1]
    for name in INCREMENT_DATASETS:
        (root / name).mkdir(parents=True, exist_ok=True)
    owner: dict[str, Path] = {}  # file name -> the part whose career and resource rows it holds
    rows = {"career": 0, "resource": 0}
    for part in chain:
        for kind in ("career", "resource"):
            for path in sorted((part.root / kind).glob("part-*.parquet")):
                if owner.setdefault(path.name, part.root) != part.root:
                    raise InputError(f"{path}: {owner[path.name]} has a file of that name too (not one chain)")
                shutil.copyfile(path, root / kind / path.name)
                rows[kind] += pq.ParquetFile(path).metadata.num_rows
        for path in sorted((part.root / CHANGES).glob("*.parquet")):
            shutil.copyfile(path, root / CHANGES / path.name)
    register = 0
    for path in sorted((final.root / "register").glob("part-*.parquet")):
        shutil.copyfile(path, root / "register" / path.name)
        register += pq.ParquetFile(path).metadata.num_rows
    truth_rows = 0
    for name in sorted(set(owner) | {p.name for p in (final.root / "register").glob("part-*.parquet")}):
        parts = [t for t in (_truth(owner[name] / "truth" / name, False) if name in owner else None,
                             _truth(final.root / "truth" / name, True)) if t is not None]
        table = pa.concat_tables(parts)
        write_dataset(table, root / "truth" / name, TRUTH_STRINGS)
        truth_rows += table.num_rows
    if truth_rows != rows["career"] + rows["resource"] + register:
        raise InputError(f"{root / 'truth'}: {truth_rows:,} truth rows for {rows['career']:,} career, "
                         f"{rows['resource']:,} resource and {register:,} register rows (a part's truth is incomplete)")
    summary = {
        "union_of": [str(d.root) for d in chain],
        "base": str(chain[0].root),
        "last_month": format_month(final.last_month),
        "seed": chain[0].summary["seed"],
        "persons": int(final.summary["persons"]),
        "base_persons": final.base_persons,
        "partitions": len(owner),
        "rows": {"register": register, **rows, "truth": truth_rows},
        "params": asdict(final.params),
        "datasets": {name: str(root / name) for name in INCREMENT_DATASETS},
    }
    with open(root / SYNTH_FILE, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    return summary
