"""The aggregate stage of an increment: only the groups of person buckets that hold an affected
bucket are computed again; the other groups' outputs are the previous job's.

The aggregate stage reads person buckets in groups (one task and one file of linked rows per
group of consecutive buckets, ``_aggregate.py``) and writes one file per bucket of each
aggregate table, named by the bucket's number, and one rows file per group, named by the
group's key (its first bucket). Its manifest records the groups (``row_groups``: key, buckets,
counts). An increment keeps the previous job's groups - a bucket new to this job joins the
group whose range holds it - and computes a group again when one of its buckets is affected
(the attach stage's ``increment.affected_buckets``) or new; the files of every other group
are the previous job's, linked (hard links, else copies) under the same names, and its
counts are taken from the previous manifest, so the manifest's totals cover every row.

A group whose buckets only gained files (this run's, named ``m<month>-...``: this month's
rows, rows that moved in; none rewritten by the attach stage) gets its aggregates from the
aggregate columns of every file or, when its previous accumulators are few enough to be worth
it (UPDATE_STATE_SHARE), reads only the new files and updates the previous job's
accumulators of each bucket (engine/stages/_aggregate_update.py; its counts are the previous
group's plus the new rows'); either way it keeps its rows files: the new files' rows in export form go into a file of their own,
``part-<key>-m<month>.parquet``, beside the previous ones (linked). After a previous job
without the career accumulators (``career_person_year_state``, the manifest's ``state``)
every career group is computed again from all its rows, none reused. Only a group holding a rewritten
bucket (a changed link) is computed from all its rows and writes them all again, into one
file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nirlink.engine.io._datasets import link_or_copy, read_json
from nirlink.kernels import StageError

__all__ = ["plan_groups", "UPDATE_STATE_SHARE"]

# A grown group is updated when its previous accumulators (person-years, person-months: the
# previous manifest's counts) are at most this share of its rows; else reading them costs as
# much as reading the rows (measured on one random 2M-row bucket read from Parquet, best of 5:
# 0.37 us per resource accumulator read and fed back, 0.22 us per career one, against 0.16 and
# 0.14 us per row read and aggregated). nirlink's synthetic data has 1.3 resource rows per person-month and 1.9
# career rows per person-year: it is computed from the rows.
UPDATE_STATE_SHARE = 0.5


def plan_groups(kind: str, parts: list[tuple[int, list[str]]], increment: dict[str, Any],
                out: Path, state: bool = True) -> tuple[list[tuple[int, list[tuple[int, list[str]]], Any]],
                                                        list[dict[str, Any]]]:
    """The groups of ``parts`` (``(bucket index, files)``) to compute, as ``(key, buckets, rows)``
    (``rows``: True, or the prefix of the files whose rows to write and the rows file's suffix),
    and the previous job's groups reused (their outputs linked into ``out``; their career
    accumulators only when this job writes them, ``state``: else its buckets would hold some)."""
    from ._aggregate import CAREER_TABLES, NULLS_INDEX, RESOURCE_TABLES

    from ._aggregate_partitions import CAREER_STATE

    prev_dir = Path(increment["previous"])
    prev_manifest = read_json(prev_dir / "_manifest.json")
    previous = prev_manifest.get("row_groups")
    if previous is None:
        raise StageError(f"aggregate: the previous job's aggregate manifest ({prev_dir}) has no row_groups: it was "
                         "written by an older nirlink; run the previous job again")
    previous = previous.get(kind, [])
    affected = {NULLS_INDEX if b == "nulls" else int(b) for b in increment["affected"].get(kind, [])}
    keys = sorted(e["key"] for e in previous)
    member = {i: e["key"] for e in previous for i in e["buckets"]}
    groups: dict[int, list[tuple[int, list[str]]]] = {k: [] for k in keys}
    for i, files in parts:
        key = member.get(i)
        if key is None:  # a bucket new to this job: computed, in the group whose range holds it
            affected.add(i)
            key = max([k for k in keys if k <= i], default=keys[0] if keys else i)
            groups.setdefault(key, [])
        groups[key].append((i, files))
    todo, reused = [], []
    tables = (*CAREER_TABLES, *([CAREER_STATE] if state else [])) if kind == "career" else RESOURCE_TABLES
    # the accumulators an update reads: the career's own dataset. A previous job written before
    # it existed has none: then every group is computed again from all its rows (none reused, so
    # that this job's accumulators cover every bucket and the next increment can update)
    updatable = kind != "career" or CAREER_STATE in prev_manifest.get("state", {})
    if not updatable:
        affected |= {i for i, _ in parts}
    modes = increment.setdefault("reuse_files", {})

    def link(src: Path, dst: Path) -> None:
        mode = link_or_copy(src, dst)
        modes[mode] = modes.get(mode, 0) + 1

    def link_rows(key: int) -> None:  # the group's rows files: its own and those earlier increments added
        for src in sorted((prev_dir / f"{kind}_rows").glob(f"part-{key:05d}*.parquet")):
            link(src, out / f"{kind}_rows" / src.name)

    rewritten = {NULLS_INDEX if b == "nulls" else int(b) for b in increment.get("rewritten", {}).get(kind, [])}
    for entry in previous:
        key, members = entry["key"], groups.pop(entry["key"])
        touched = affected & ({*entry["buckets"]} | {i for i, _ in members})
        if touched and members:
            # a group that only gained files: its aggregates updated from the previous job's and
            # the new files, its previous rows files kept and this month's rows in a file of their
            # own; else all computed again from every row
            grown = not touched & rewritten and {i for i, _ in members} == set(entry["buckets"])
            if grown:
                link_rows(key)
                counts = entry["counts"]
                small = counts.get("person_years" if kind == "career" else "person_months", 0) <= \
                    UPDATE_STATE_SHARE * counts.get("rows_in", 0)
                rows = (increment["new_prefix"], increment["rows_suffix"]) + \
                    ((str(prev_dir), counts) if updatable and small else ())
            todo.append((key, sorted(members), rows if grown else True))
        if touched:
            continue
        for name in tables:
            for i in entry["buckets"]:
                src = prev_dir / name / f"part-{i:05d}.parquet"
                if src.exists():
                    link(src, out / name / src.name)
        link_rows(key)
        reused.append(entry)
    todo += [(key, sorted(members), True) for key, members in groups.items() if members]
    increment["reuse"] = " and ".join(sorted(modes)) or None
    return todo, reused
