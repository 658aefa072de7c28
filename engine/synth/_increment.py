"""`nirlink synth --increment-of DIR --month YYYY-MM`: a monthly increment of a synthetic dataset.

An increment has the layout of a base dataset: ``register/`` is the full register snapshot
of the month (the previous snapshot's files rewritten with the month's deaths, corrections
and merges, plus one new file of the new persons: _increment_register.py), ``career/`` and
``resource/`` hold only the rows declared that month (one file, named as the new register
file: _increment_rows.py), ``truth/`` the truth of those rows and of every register entry
of the snapshot (so `nirlink evaluate` works on a job over the increment), and
``truth_register_changes/`` one row per register change. ``_synth.json`` names the dataset
it builds on (``increment_of``), the month, the seed and the base's settings.

Random streams derive from (seed, month) only: the same seed and previous dataset give
byte-identical files. The seed defaults to the previous dataset's.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nirlink.kernels import InputError

from ._describe import SYNTH_FILE, describe, format_month, month_tag, parse_month
from ._increment_register import CHANGES, IncrementRates, build_snapshot
from ._increment_rows import write_rows

__all__ = ["increment", "INCREMENT_DATASETS", "prepare_output"]

INCREMENT_DATASETS = ("register", "career", "resource", "truth", CHANGES)


def prepare_output(root: Path, names: tuple[str, ...], *, overwrite: bool, sources: list[Path] = ()) -> None:
    """Refuse a non-empty ``root`` without ``overwrite`` (with it, remove ``names`` and
    _synth.json), and an output that is one of the ``sources``."""
    root = root.resolve()
    for s in sources:
        if root == s or s.is_relative_to(root) or root.is_relative_to(s):
            raise InputError(f"--out {root} must lie outside the dataset it reads ({s})")
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise InputError(f"output directory {root} is not empty (pass overwrite to replace it)")
        for name in (*names, "truth_signals", SYNTH_FILE):
            target = root / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    root.mkdir(parents=True, exist_ok=True)


def increment(previous: str | os.PathLike, out: str | os.PathLike, *, month: str, seed: int | None = None,
              rates: IncrementRates | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Write the increment of ``month`` (YYYY-MM) of the dataset ``previous`` (a base or an
    increment) under ``out``; returns the summary also written to ``out/_synth.json``."""
    from nirlink.engine.reference._tables import year_table

    m = parse_month(month)
    prev = describe(previous)
    if m <= prev.last_month:
        what = "increment" if prev.month is not None else "base dataset"
        raise InputError(f"--month {month} must come after {format_month(prev.last_month)}, the last month of the "
                         f"{what} {prev.root}")
    last_year = year_table().last_year
    if m // 12 > last_year:
        raise InputError(f"--month {month} is after {last_year}, the last year of the reference tables "
                         "(SMIC, PASS) the rows are drawn from")
    seed = int(prev.summary["seed"] if seed is None else seed)
    if seed < 0:
        raise InputError(f"--seed must be >= 0, got {seed}")
    rates = rates or IncrementRates.from_config()
    root = Path(out)
    prepare_output(root, INCREMENT_DATASETS, overwrite=overwrite, sources=[prev.root])
    root = root.resolve()
    t0 = time.perf_counter()
    tag = month_tag(m)
    snapshot = build_snapshot(prev, root, m, seed=seed, tag=tag, rates=rates)
    rows = write_rows(prev, root, m, snapshot, seed=seed, tag=tag)
    chain = prev.chain()
    register_rows = sum(_rows(p) for p in sorted((root / "register").glob("*.parquet")))
    base_rows = sum(int(chain[0].summary["rows"][k]) for k in ("career", "resource"))
    summary = {
        "increment_of": str(prev.root),
        "base": str(chain[0].root),
        "month": format_month(m),
        "seed": seed,
        "persons": snapshot.persons,
        "base_persons": prev.base_persons,
        "partitions": len(list((root / "register").glob("*.parquet"))),
        "new_file": snapshot.new_file,
        "rows": {"register": register_rows, "career": rows["career"], "resource": rows["resource"],
                 "truth": rows["career"] + rows["resource"] + register_rows},
        "rows_carried": rows["carried"],  # career and resource rows of persons already in the register
        "rows_of_new_persons": rows["new_person_rows"],  # career and resource rows of the new persons
        "share_of_base_rows": round((rows["career"] + rows["resource"]) / max(base_rows, 1), 6),
        "register_changes": snapshot.changes,
        "rates": asdict(rates),
        "seconds": round(time.perf_counter() - t0, 3),
        "params": asdict(prev.params),
        "datasets": {name: str(root / name) for name in INCREMENT_DATASETS},
    }
    with open(root / SYNTH_FILE, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    return summary


def _rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows
