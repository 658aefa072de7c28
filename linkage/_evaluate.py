"""Accuracy of a link table against a truth table: precision, recall and F1 at the signature
and at the row level, by NIR status, with the ambiguous and unlinked counts; the share of true
pairs blocking reaches; register deduplication against the true duplicates; for a synthetic
increment (a ``truth_register_changes/`` beside the truth), the rows of the persons each kind of
register change touched, and the signatures linked to an entry merged away.

Truth: a Parquet dataset with columns source ('career' / 'resource' / 'register'),
record_id, register_nir and true_nir (as `nirlink synth` writes it).

Out of core: each ingest file's signature ids (stored by the ingest stage; hashed from the
identity columns of rows without them) are read batch by batch and written to a
temporary Parquet dataset of (record_id, signature, nir_status: the row's own when it has one,
else its signature's in the link table, a function of the signature); DuckDB then joins it with the
truth under a memory limit, spilling to a temporary directory, and first collapses the rows
into (signature, NIR status, true NIR, count) groups, so that every later step works on about
as many rows as there are signatures; that join runs in parts of at most ROWS_PER_PASS rows
(a hash of the record id), whose groups are added up. Memory stays near one batch plus DuckDB's limit,
whatever the number of rows.

A signature's true person is the true NIR of most of its rows (ties: the smaller NIR) and its
NIR status that of most of its rows (ties: the smaller status; every row of a signature
shares its declared NIR, hence, in practice, its status).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ._model import ModelSpec
from ._prepare import signature_ids

__all__ = ["evaluate", "DEFAULT_MEMORY_LIMIT"]

DEFAULT_MEMORY_LIMIT = "4GB"
# rows joined with the truth at a time (a hash partition of the record ids): ~2.4 GB of join
# keys and true NIRs, within the default memory limit
ROWS_PER_PASS = 100_000_000
_ROW_COLUMNS = ["record_id", "declared_nir", "last_name_key", "first_names_norm", "birth_year", "birth_month",
                "birth_day", "nir_status"]
_SIG_SCHEMA = pa.schema([pa.field("record_id", pa.int64()), pa.field("signature", pa.int64()),
                         pa.field("nir_status", pa.string())])


def _write_row_signatures(files: list[str], out: Path, batch_rows: int) -> None:
    """(record_id, signature, nir_status) of every ingested row, one output file per input file,
    reading one batch of rows at a time: the signature the ingest stage stored, or hashed from
    the identity columns of rows without it."""
    out.mkdir(parents=True)
    written = 0
    for i, f in enumerate(files):
        pf = pq.ParquetFile(f)
        stored = "signature" in pf.schema_arrow.names
        writer = None
        try:
            status = "nir_status" in pf.schema_arrow.names  # ingested rows no longer hold it
            columns = ["record_id", "signature", *(["nir_status"] if status else [])] if stored else _ROW_COLUMNS
            for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
                if batch.num_rows == 0:
                    continue
                t = pa.Table.from_batches([batch])
                sig = t.column("signature") if stored else pa.array(signature_ids(t), pa.int64())
                part = pa.table({"record_id": t.column("record_id").cast(pa.int64()),
                                 "signature": sig.cast(pa.int64()),
                                 "nir_status": t.column("nir_status").cast(pa.string()) if status else
                                 pa.nulls(t.num_rows, pa.string())}, schema=_SIG_SCHEMA)
                if writer is None:
                    writer = pq.ParquetWriter(out / f"part-{i:06d}.parquet", _SIG_SCHEMA)
                writer.write_table(part)
                written += 1
        finally:
            if writer is not None:
                writer.close()
    if not written:  # DuckDB needs at least one file to read the schema from
        pq.write_table(_SIG_SCHEMA.empty_table(), out / "part-empty.parquet")


def _scores(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"true_positives": tp, "false_positives": fp, "false_negatives": fn,
            "precision": precision, "recall": recall, "f1": f1}


def _sql_path(p: Path | str) -> str:
    return str(p).replace("'", "''")


def evaluate(link_dir: str | Path, row_files: list[str], truth_dir: str | Path, *,
             model: ModelSpec | None = None, memory_limit: str = DEFAULT_MEMORY_LIMIT,
             temp_dir: str | Path | None = None, threads: int | None = None,
             batch_rows: int = 1 << 20) -> dict[str, Any]:
    """The accuracy report of ``link_dir``'s links for the ingested rows ``row_files``.

    ``memory_limit`` bounds DuckDB (a DuckDB size, e.g. "4GB"), which spills to a temporary
    directory made under ``temp_dir`` (default: the system's) and removed afterwards;
    ``threads`` defaults to the number of cores; ``batch_rows`` rows are read at a time."""
    link_dir, truth_dir = Path(link_dir), Path(truth_dir)
    scratch = Path(tempfile.mkdtemp(prefix="nirlink-evaluate-", dir=temp_dir))
    try:
        _write_row_signatures(row_files, scratch / "rows", batch_rows)
        return _report(link_dir, truth_dir, scratch, model, memory_limit, threads or os.cpu_count() or 1)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _report(link_dir: Path, truth_dir: Path, scratch: Path, model: ModelSpec | None, memory_limit: str,
            threads: int) -> dict[str, Any]:
    import duckdb

    (scratch / "duckdb").mkdir()
    con = duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": str(scratch / "duckdb"),
                                 "threads": threads, "preserve_insertion_order": False})
    try:
        con.execute(f"create view rows_sig as select * from read_parquet('{_sql_path(scratch / 'rows')}/*.parquet')")
        con.execute(f"create view links as select * from read_parquet('{_sql_path(link_dir)}/links/*.parquet')")
        con.execute(f"create view truth as select * from read_parquet('{_sql_path(truth_dir)}/*.parquet')")
        con.execute("create temp table reg_truth as select register_nir, true_nir from truth where source = 'register'")
        # rows collapsed into (signature, NIR status, true NIR) groups: the one join of every row
        # with its truth, in parts of at most ROWS_PER_PASS rows (record ids split by a hash),
        # each part's groups added up after. In one join at 1e9 rows, DuckDB's hash table of a
        # side spilled over 50 GB and filled the disk; a part's fits the memory limit
        rows = sum(pq.read_metadata(f).num_rows for f in sorted((scratch / "rows").glob("*.parquet")))
        parts = max(1, -(-rows // ROWS_PER_PASS))
        con.execute("create temp table part_groups (signature bigint, nir_status varchar, true_nir varchar, "
                    "n bigint)")
        for part in range(parts):
            where = f"hash(record_id) % {parts} = {part}" if parts > 1 else "true"
            con.execute(f"""insert into part_groups
                select r.signature, r.nir_status, t.true_nir, count(*)::bigint as n
                from (select * from rows_sig where {where}) r
                join (select record_id, true_nir from truth where source <> 'register' and {where}) t
                  on t.record_id = r.record_id
                group by all""")
        # a row without its own NIR status (the ingested rows' is in their identities) takes
        # its signature's, a function of the signature, from the link table
        linked_status = "nir_status" in {c[0] for c in con.execute("describe links").fetchall()}
        con.execute(f"""create temp table row_groups as
            select g.signature, {'coalesce(g.nir_status, l.nir_status)' if linked_status else 'g.nir_status'}
                   as nir_status, g.true_nir, sum(g.n)::bigint as n
            from part_groups g left join links l on l.signature = g.signature group by all""")
        con.execute("drop table part_groups")
        # per row (weighted by n): the row's true NIR against its signature's link
        con.execute("""create temp table row_eval as
            select g.signature, g.nir_status, g.true_nir, g.n, l.status, rt.true_nir as predicted
            from row_groups g left join links l on l.signature = g.signature
            left join reg_truth rt on rt.register_nir = l.person""")
        con.execute("""create temp table sig_eval as
            with per_nir as (select signature, true_nir, sum(n) as n from row_groups group by all),
            per_status as (select signature, nir_status, sum(n) as n from row_groups group by all),
            sig as (select signature, first(true_nir order by n desc, true_nir) as true_nir, sum(n) as rows
                    from per_nir group by signature),
            st as (select signature, first(nir_status order by n desc, nir_status) as nir_status
                   from per_status group by signature)
            select s.signature, st.nir_status, s.true_nir, l.status, rt.true_nir as predicted, s.rows, 1 as n
            from sig s join st using (signature)
            left join links l on l.signature = s.signature
            left join reg_truth rt on rt.register_nir = l.person""")

        def measure(table: str, group: str | None = None) -> Any:
            sql = f"""select {group + ',' if group else ''}
                        sum(case when status = 'linked' and predicted = true_nir then n else 0 end) as tp,
                        sum(case when status = 'linked' and predicted is distinct from true_nir then n else 0 end),
                        sum(case when coalesce(status, 'unlinked') <> 'linked' then n else 0 end) as fn,
                        sum(case when status = 'ambiguous' then n else 0 end) as ambiguous,
                        sum(case when coalesce(status, 'unlinked') = 'unlinked' then n else 0 end) as unlinked
                      from {table} {'group by ' + group + ' order by ' + group if group else ''}"""
            rows = con.execute(sql).fetchall()

            def one(r):
                return {**_scores(int(r[0] or 0), int(r[1] or 0), int(r[2] or 0)), "ambiguous": int(r[3] or 0),
                        "unlinked": int(r[4] or 0)}

            return {r[0]: one(r[1:]) for r in rows} if group else one(rows[0])

        report: dict[str, Any] = {
            "signatures": measure("sig_eval"),
            "rows": measure("row_eval"),
            "signatures_by_nir_status": measure("sig_eval", "nir_status"),
            "rows_by_nir_status": measure("row_eval", "nir_status"),
        }
        # blocking reach: signatures left to the model whose true register row some rule pairs them with
        if model is not None and (link_dir / "signatures").exists():
            con.execute(f"create view sigs as select * from read_parquet('{_sql_path(link_dir)}/signatures/*.parquet')")
            con.execute(f"create view reg as select * from read_parquet('{_sql_path(link_dir)}/register/*.parquet')")
            # a fallback rule pairs only the signatures with no equal register entry on its columns
            sets = list(dict.fromkeys(b.fallback for b in model.blocking if b.fallback))
            twin = {cols: f"l.__twin{i}" for i, cols in enumerate(sets)}
            twin_sql = "".join(
                f", exists (select 1 from reg t where {' and '.join(f't.{c} = s.{c}' for c in cols)}) as __twin{i}"
                for i, cols in enumerate(sets))

            def admits(b) -> str:
                return f"coalesce(({b.sql}), false)" + (f" and not {twin[b.fallback]}" if b.fallback else "")

            reach = " OR ".join(f"({admits(b)})" for b in model.blocking)
            per_rule = ", ".join(f"max(({admits(b)})::int) as \"{b.name}\"" for b in model.blocking)
            names = [b.name for b in model.blocking]
            r = con.execute(f"""
                with todo as (select s.*{twin_sql} from sigs s join links k on k.signature = s.unique_id
                              where k.method is distinct from 'nir'),
                pairs as (select l.unique_id as sid, max(({reach})::int) as reached, {per_rule}
                          from todo l join sig_eval e on e.signature = l.unique_id
                          join reg_truth t on t.true_nir = e.true_nir join reg r on r.nir = t.register_nir
                          group by l.unique_id)
                select count(*), sum(reached), {", ".join(f'sum("{n}")' for n in names)} from pairs""").fetchone()
            report["blocking"] = {"signatures_to_model": int(r[0] or 0), "true_pair_reached": int(r[1] or 0),
                                  "reach": (r[1] or 0) / r[0] if r[0] else 1.0,
                                  "reached_by_rule": {n: int(v or 0) for n, v in zip(names, r[2:])}}
        # register duplicates: pairs of register rows of one true person
        if (link_dir / "clusters.parquet").exists():
            con.execute(f"create view cl as select * from read_parquet('{_sql_path(link_dir / 'clusters.parquet')}')")
            con.execute(f"create view regall as select * from read_parquet('{_sql_path(link_dir)}/register/*.parquet')")
            true_pairs = con.execute("""select count(*) from reg_truth a join reg_truth b on a.true_nir = b.true_nir
                                        and a.register_nir < b.register_nir""").fetchone()[0]
            found = con.execute("""select sum((ta.true_nir = tb.true_nir)::int), count(*) from cl a join cl b
                on a.cluster = b.cluster and a.unique_id < b.unique_id
                join regall ra on ra.unique_id = a.unique_id join regall rb on rb.unique_id = b.unique_id
                join reg_truth ta on ta.register_nir = ra.nir join reg_truth tb on tb.register_nir = rb.nir""").fetchone()
            tp = int(found[0] or 0)
            report["register_duplicates"] = _scores(tp, int(found[1] or 0) - tp, int(true_pairs) - tp)
        changes = truth_dir.parent / "truth_register_changes"
        if changes.is_dir() and any(changes.glob("*.parquet")):
            report["register_changes"] = _changes(con, changes, measure)
        return report
    finally:
        con.close()


def _changes(con, changes: Path, measure) -> dict[str, Any]:
    """Rows of the persons a synthetic increment's register changes touched (truth_register_changes/
    beside truth/, engine/synth/_increment_register.py), scored per kind of change; and the
    signatures still linked to an entry merged away (a person id that no longer exists)."""
    con.execute(f"create view changes as select * from read_parquet('{_sql_path(changes)}/*.parquet')")
    con.execute("""create temp table change_eval as select c.kind, e.* from row_eval e
                   join (select distinct kind, true_nir from changes) c using (true_nir)""")
    per_kind = measure("change_eval", "kind") if con.execute("select count(*) from change_eval").fetchone()[0] else {}
    counts = dict(con.execute("select kind, count(*) from changes group by 1").fetchall())
    stale = con.execute("""select count(*) from links l
                           where l.person in (select register_nir from changes where kind = 'merge')""").fetchone()[0]
    return {"changes": {k: int(v) for k, v in sorted(counts.items())}, "rows_by_kind": per_kind,
            "links_to_merged_away_entries": int(stale)}
