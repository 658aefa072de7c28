"""Phase 2 of the link stage: the register's linkage columns, one part file per register file."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._prepare import LINK_COLUMNS, register_table
from ._tasks import Progress, run_tasks

__all__ = ["build_register", "register_files", "register_entries"]


def _reg_map(f: str, work: str, i: int) -> dict[str, int]:
    t = pq.read_table(f, use_threads=False)
    reg = register_table(t)
    pq.write_table(reg, Path(work) / "register" / f"part-{i:05d}.parquet", compression="zstd")
    kinds = Counter(t.column("nir_kind").to_pylist()) if "nir_kind" in t.column_names else {}
    return {"rows": reg.num_rows, **{f"kind_{k}": v for k, v in kinds.items()}}


def build_register(files: Sequence[str], work: Path, *, client=None, progress: Progress | None = None) -> dict:
    (work / "register").mkdir(parents=True, exist_ok=True)
    res = run_tasks(client, _reg_map, [(f, str(work), i) for i, f in enumerate(files)], name="register",
                    progress=progress)
    total = Counter()
    for r in res:
        total.update(r)
    return dict(total)


def register_files(work: Path) -> list[str]:
    return [str(p) for p in sorted((work / "register").glob("part-*.parquet"))]


def register_entries(work: Path, column: str, values: pa.Array) -> pa.Table:
    """The register entries of ``work`` whose ``column`` is one of ``values`` (a null is none),
    each file cut as it is read: the driver never holds the whole register."""
    parts = [t.filter(pc.fill_null(pc.is_in(t.column(column), value_set=values), False))
             for t in (pq.read_table(f) for f in register_files(work))]
    return pa.concat_tables(parts, promote_options="permissive") if parts else LINK_COLUMNS.empty_table()
