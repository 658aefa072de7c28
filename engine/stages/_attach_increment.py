"""The attach stage of an increment: only the person buckets that hold a new or changed row are written.

A row's attached columns (person, its birth year and month, link status, method and
probability) come from its signature's line in the link table. Between the previous job and
this one a line changes when the signature's decision (person, status, method) moved (a
register change, a carried signature scored against added entries) or its person's birth
year or month was corrected, and is new for a new signature; an unchanged decision keeps the
previous job's probability (the link stage carries it), so a probability that moved with the
register's term frequencies changes no line. A person bucket is *moved* when it held, or
will hold, a row whose line changed (the buckets of the line's old and new person;
``b=nulls`` for a row without one); a new signature moves nothing (its rows are all this
month's).

The stage writes this month's rows into their buckets (new files), then goes through the
previous files of each bucket that loses rows (a changed line's old person's, ``b=nulls``
when it had none): a file without a row of a changed line (its ``signature`` column read) is
linked as it is; the others are read once, their rows of unchanged lines written as they are
into one file of the same bucket and their rows of changed lines attached again into their
buckets (they land in moved buckets only; in a bucket that only gains rows, as a new file).
Every other previous file is linked into this output as it is: hard links where the file
system has them (no copy, no extra disk; the manifest says ``reuse: hardlink``), copies
otherwise (``reuse: copy``). A bucket's files need no global order (the aggregate stage
sorts what it reads), so a bucket that only gains rows keeps its previous files beside the
new one. The *affected* buckets,
whose aggregates must be computed again, are those whose files are not exactly the
previous job's. The bucket count is the previous job's (a person's bucket must not move).
``delta/`` lists the changed persons: those of this month's rows and both persons of every
changed line.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from nirlink.engine.io._datasets import describe_dataset, link_or_copy, read_json, staged_directory, write_json
from nirlink.kernels import StageError
from nirlink.kernels._segments import sorted_unique
from nirlink.linkage._buckets import is_in_sorted

from ._attach import (PERSON_COLUMNS, _attach_files, _BucketWriters, _build_lookup, _LinkLookup, _task_groups,
                      attach_task_rows, person_buckets)
from ._bucket_writers import writable

__all__ = ["run_attach_increment", "DELTA_SCHEMA"]

DELTA_SCHEMA = pa.schema([pa.field("person", pa.string(), nullable=False),
                          pa.field("change", pa.string(), nullable=False)])  # rows | relinked
SOURCES = ("career", "resource")


def _changed_lines(lookup: str, previous: str) -> pa.Table:
    """Signatures whose attached columns differ from the previous job's (or are new), with the
    person their rows carried before and carry now (null: no person)."""
    import duckdb

    def person(t):
        return f"case when {t}.link_status = 'linked' then {t}.person end"

    same = " and ".join(f"n.{c} is not distinct from p.{c}" for c in PERSON_COLUMNS)
    con = duckdb.connect()
    con.execute("SET threads = 1")
    con.register("n_links", _ipc(lookup))
    con.register("p_links", _ipc(previous))
    t = con.sql(f"""
        select n.signature, {person('p')} as old_person, {person('n')} as new_person, p.signature is null as new
        from n_links n left join p_links p using (signature)
        where p.signature is null or not ({same})
        union all
        select p.signature, {person('p')}, null, false from p_links p
        anti join n_links n using (signature)""").to_arrow_table()
    con.close()
    return t


def _ipc(path: str) -> pa.Table:
    import pyarrow.ipc as ipc

    with pa.memory_map(path, "r") as f:
        return ipc.open_file(f).read_all()


def run_attach_increment(ingest_dir: str | Path, link_dir: str | Path, out_dir: str | Path, previous: str | Path, *,
                         month: str, client=None, progress: Callable[..., None] | None = None,
                         consume: bool = False) -> dict:
    """Attach this month's rows and rewrite the person buckets that lose rows of the previous job's
    attach output (``previous``: its job directory); the other files are reused. This run's
    files are named after ``month`` (``m<month>-...``): the files an earlier increment of the
    chain wrote are among the reused ones, and must keep their names."""
    from nirlink.linkage._tasks import run_tasks, share

    from ._link import ingested_files

    prev = Path(previous).resolve() / "attach"
    n_buckets = int(read_json(prev / "_manifest.json")["person_buckets"])
    files = ingested_files(ingest_dir)
    link_dir = Path(link_dir).resolve()
    with staged_directory(Path(out_dir)) as work:
        work = work.resolve()
        lookup, prev_lookup = str(work / ".links.arrow"), str(work / ".previous-links.arrow")
        signatures = run_tasks(client, _build_lookup,
                               [(str(link_dir), lookup, n_buckets), (str(prev.parent / "link"), prev_lookup)],
                               name="attach-lookup", progress=progress)[0]
        tag = f"m{month}-"
        if any(f.name.startswith(tag) for f in prev.glob("*/b=*/*.parquet")):
            raise StageError(f"attach: the previous job's buckets already hold files of month {month}: an increment "
                             "of that month is in the chain already (increment.month)")
        changed = _changed_lines(lookup, prev_lookup)
        delta = _delta(changed, lookup, files, work)  # before the rows are attached (and maybe removed)
        args = [(group, source, lookup, str(work), n_buckets, f"{tag}new-{i:05d}", consume) for source in SOURCES
                for i, group in enumerate(_task_groups(files[source], attach_task_rows(n_buckets)))]
        new = run_tasks(client, _attach_files, args, name="attach", progress=progress, rows=lambda r: r["rows"])
        # a new signature's rows are all this month's (written as new files): only a line that
        # changed moves rows already in the buckets
        old = changed.filter(pc.invert(changed.column("new")))

        def buckets(column: str) -> set[str]:
            persons = old.column(column).combine_chunks()
            out = {f"{int(b):05d}" for b in np.unique(person_buckets(persons.drop_null(), n_buckets))} \
                if persons.null_count < len(persons) else set()
            return out | ({"nulls"} if persons.null_count else set())

        # a bucket that loses rows (their old person's, or the same person's with a changed line) is
        # rewritten; one that only gains rows gets them as a new file beside its previous ones
        losing, moved = buckets("old_person"), buckets("old_person") | buckets("new_person")
        rewrite, reuse, reused, theirs = {}, Counter(), {}, {}
        for source in SOURCES:  # every previous file is linked but those of the buckets rewritten
            theirs[source] = {p.name[2:]: sorted(p.glob("*.parquet")) for p in (prev / source).glob("b=*")} \
                if (prev / source).exists() else {}
            rewrite[source] = sorted(losing & set(theirs[source]))
            reused[source] = sorted(set(theirs[source]) - set(rewrite[source]))
            for b in reused[source]:
                for f in theirs[source][b]:
                    reuse[link_or_copy(f, work / source / f"b={b}" / f.name)] += 1
        before = {s: {p.name[2:]: set(os.listdir(p)) for p in (work / s).glob("b=*")} for s in SOURCES
                  if (work / s).exists()}
        moving = share(client, sorted_unique(old.column("signature").to_numpy()))
        args = [([str(f) for f in theirs[source][b]], source, lookup, str(work), n_buckets, f"{tag}previous-{b}",
                 moving) for source in SOURCES for b in rewrite[source]]
        again = run_tasks(client, _rewrite_files, args, name="attach-previous", progress=progress,
                          rows=lambda r: r["rows"])
        for r in again:
            reuse.update(r.pop("reuse"))
        affected = {}
        for source in SOURCES:  # a bucket whose files are not the previous job's, all of them
            now = {p.name[2:]: sorted(f.name for f in p.glob("*.parquet")) for p in (work / source).glob("b=*")} \
                if (work / source).exists() else {}
            affected[source] = sorted(b for b in set(now) | set(theirs[source])  # a bucket emptied too
                                      if now.get(b, []) != [f.name for f in theirs[source].get(b, [])])
            # rows rewritten from a moved bucket land in moved buckets only (both persons of a changed line)
            stray = [b for b in affected[source]
                     if b not in moved and set(now.get(b, [])) != before.get(source, {}).get(b)]
            if stray:
                raise StageError(f"attach: rewritten rows landed in {source} buckets {stray[:5]}, which no changed "
                                 "signature's person is in")
        os.remove(lookup)
        os.remove(prev_lookup)
        per_source: dict[str, Counter] = {}
        for r in new + again:
            per_source.setdefault(r["source"], Counter()).update({k: v for k, v in r.items() if k != "source"})
        manifest = {
            "stage": "attach", "signatures": signatures, "person_buckets": n_buckets,
            "inputs": {s: dict(c) for s, c in per_source.items()},
            "increment": {"previous": str(prev.parent), "changed_signatures": changed.num_rows,
                          "affected_buckets": affected, "rewritten_buckets": rewrite,
                          "reused_buckets": {s: len(v) for s, v in reused.items()},
                          "reuse": "hardlink" if not reuse.get("copy") else "copy" if not reuse.get("hardlink")
                          else "hardlink and copy", "reused_files": dict(reuse), "delta_persons": delta},
            "tables": {s: describe_dataset(work / s, relative_to=work) for s in SOURCES if (work / s).exists()},
        }
        write_json(work / "_manifest.json", manifest)
    return manifest


def _rewrite_files(paths: list[str], source: str, lookup: str, out: str, n_buckets: int, part: str,
                   moving: np.ndarray) -> dict:
    """The previous files of a bucket that loses rows: a file without a row of a ``moving``
    signature (a changed line) is linked as it is; in the others the rows of an unchanged line
    stay in this bucket as they are (one file, ``part``) and the rows of a changed line are
    attached again into their buckets."""
    total, reuse = Counter(rows=0, rows_attached_again=0), Counter()
    bucket = Path(paths[0]).parent.name[2:]
    target = Path(out) / source / f"b={bucket}"
    with pa.memory_map(lookup, "r") as source_file, _BucketWriters(Path(out) / source, n_buckets, part) as writers:
        links = _LinkLookup(ipc.open_file(source_file).read_all())
        for path in paths:
            sig = pq.read_table(path, columns=["signature"], use_threads=False).column("signature").to_numpy()
            moved = is_in_sorted(sig, moving)
            if not moved.any():
                reuse[link_or_copy(Path(path), target / Path(path).name)] += 1
                continue
            # strings read as dictionaries: the rows kept are written with the small ones and the
            # person as they are (_bucket_writers.py), those attached again move indices
            strings = [f.name for f in pq.read_schema(path) if pa.types.is_string(f.type)]
            rows = pq.read_table(path, use_threads=False, read_dictionary=strings)
            total.update({"rows": rows.num_rows, "rows_attached_again": int(moved.sum())})
            if not moved.all():
                writers._append(bucket, writable(rows.filter(pa.array(~moved))))
            rows, sig = rows.filter(pa.array(moved)), sig[moved]
            extra, their_buckets, rank = links.attach(sig)
            for c in PERSON_COLUMNS:
                rows = rows.set_column(rows.schema.get_field_index(c), c, extra[c])
            writers.write(rows, their_buckets, rank)
    return {"source": source, **total, "reuse": dict(reuse)}


def _delta(changed: pa.Table, lookup: str, files: dict, work: Path) -> int:
    """``delta/``: every changed person once, ``relinked`` (a signature's link moved to or from
    the person) before ``rows`` (only rows of this month)."""
    import duckdb

    ingested = [f for s in SOURCES for f in files[s]]
    con = duckdb.connect()
    con.execute("SET threads = 1")
    con.register("changed", changed)
    month = pa.array([], pa.string())
    if ingested:
        sigs = sorted_unique(np.concatenate([pq.read_table(f, columns=["signature"]).column("signature").to_numpy()
                                         for f in ingested if os.path.exists(f)] or [np.zeros(0, np.int64)]))
        con.register("month_sigs", pa.table({"signature": sigs}))
        con.register("n_links", _ipc(lookup))
        month = con.sql("""select distinct l.person from n_links l join month_sigs using (signature)
                            where l.link_status = 'linked'""").to_arrow_table().column("person")
    con.register("month_persons", pa.table({"person": month}))
    t = con.sql("""
        with all_changes as (
          select person, 'rows' as change from month_persons
          union all select old_person, 'relinked' from changed where old_person is not null
          union all select new_person, 'relinked' from changed where new_person is not null)
        select person, min(change) as change from all_changes group by person order by person""").to_arrow_table()
    con.close()
    (work / "delta").mkdir(exist_ok=True)
    pq.write_table(t.cast(DELTA_SCHEMA), work / "delta" / "part-00000.parquet", compression="zstd")
    return t.num_rows
