"""Person ids that stay stable across increments, the map of those that change, and the
clerical decisions an increment carries over.

A person is a register entry, or a cluster of duplicate entries, named by one entry's NIR.
A full run names a cluster by its smallest permanent (valid) NIR, else its smallest NIR. An
increment keeps the ids already published: a cluster is named by the previous run's person
of its entries, among those persons that are still entries of the cluster (the same rule
choosing when two published persons merge); only a cluster without any is named by the full
run's rule. An entry alone is its own person. When a published person stops being one (its
entry merged into another person's cluster, or removed from the register), ``person_changes``
maps it to the person that now holds it: the cluster's, or, for a removed entry, the person
most of its previous signatures' rows now link to (none when they link nowhere).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nirlink.kernels._hash import hash_rows

from ._decisions import CLERICAL_SCHEMA

__all__ = ["stable_clusters", "person_changes", "carried_clerical", "PERSON_CHANGES_SCHEMA"]

PERSON_CHANGES_SCHEMA = pa.schema([
    pa.field("old_person", pa.string(), nullable=False),
    pa.field("new_person", pa.string()),  # null: its rows link to no person now
    pa.field("month", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),  # merged | entry_removed
])


def _g(d: Path) -> str:
    return str(d / "*.parquet")


def stable_clusters(previous: Path, work: Path) -> dict[str, int]:
    """Rename the clusters of ``work/clusters.parquet`` to the persons ``previous`` (the previous
    run's link directory) published, where one of them is still an entry of the cluster."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 1")
    prev_clusters = previous / "clusters.parquet"
    t = con.sql(f"""
        with cur as (select * from read_parquet('{work / "clusters.parquet"}')),
        reg as (select unique_id, nir, nir_status, birth_year, birth_month from read_parquet('{_g(work / "register")}')),
        prevp as (select r.unique_id, coalesce(c.person, r.nir) as prev_person
                  from read_parquet('{_g(previous / "register")}') r
                  left join read_parquet('{prev_clusters}') c using (unique_id)),
        members as (select cur.cluster, reg.nir, reg.nir_status, p.prev_person
                    from cur join reg using (unique_id) left join prevp p using (unique_id)),
        published as (select distinct m.cluster, m2.nir, m2.nir_status from members m
                      join members m2 on m2.cluster = m.cluster and m2.nir = m.prev_person),
        choice as (select cluster, coalesce(min(case when nir_status = 'valid' then nir end), min(nir)) as person
                   from published group by cluster),
        named as (select cur.unique_id, cur.cluster, coalesce(ch.person, cur.person) as person
                  from cur left join choice ch using (cluster))
        select n.unique_id, n.cluster, n.person, r.birth_year, r.birth_month
        from named n left join reg r on r.nir = n.person
        order by n.unique_id""").to_arrow_table()
    before = pq.read_table(work / "clusters.parquet")
    con.close()
    kept = int(pc.sum(pc.not_equal(t.column("person"), before.sort_by("unique_id").column("person"))).as_py() or 0) \
        if t.num_rows else 0
    pq.write_table(t.cast(before.schema), work / "clusters.parquet")
    return {"entries_named_by_a_published_id": kept}


def person_changes(previous: Path, work: Path, month: str) -> pa.Table:
    """Published persons of ``previous`` that are no longer persons in ``work``, with the person
    that holds them now; written to ``work/person_changes/``."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 1")
    t = con.sql(f"""
        with prev_persons as (select distinct person from read_parquet('{_g(previous / "links")}')
                              where person is not null),
        now_person as (select r.nir, coalesce(c.person, r.nir) as person
                       from read_parquet('{_g(work / "register")}') r
                       left join read_parquet('{work / "clusters.parquet"}') c using (unique_id)),
        moved as (select p.person as old, n.person as new, sum(n.rows) as rows
                  from read_parquet('{_g(previous / "links")}') p
                  join read_parquet('{_g(work / "links")}') n using (signature)
                  where p.person is not null and n.person is not null and n.person <> p.person group by 1, 2),
        best as (select old, arg_max(new, rows) as new from moved group by old)
        select pp.person as old_person, coalesce(np.person, b.new) as new_person, '{month}' as month,
               case when np.nir is null then 'entry_removed' else 'merged' end as reason
        from prev_persons pp left join now_person np on np.nir = pp.person
        left join best b on b.old = pp.person
        where np.nir is null or np.person <> pp.person
        order by old_person""").to_arrow_table()
    con.close()
    t = t.cast(PERSON_CHANGES_SCHEMA)
    (work / "person_changes").mkdir(exist_ok=True)
    pq.write_table(t, work / "person_changes" / "part-00000.parquet", compression="zstd")
    return t


def carried_clerical(previous: Path, removed: np.ndarray, own: pa.Table | None) -> pa.Table | None:
    """The previous run's clerical decisions (``method = 'clerical'``), but those naming a
    removed register entry, under this run's own decisions (which win, signature by signature)."""
    files = sorted((previous / "links").glob("*.parquet"))
    t = pa.concat_tables([pq.read_table(f, columns=["signature", "register_nir", "method"]) for f in files])
    t = t.filter(pc.equal(t.column("method"), "clerical")).drop_columns(["method"])
    if t.num_rows == 0:
        return own
    nirs = t.column("register_nir").combine_chunks()
    ids = hash_rows(pc.fill_null(nirs, ""))
    ids_arr = pa.array(ids, mask=np.asarray(nirs.is_null()))
    t = pa.table({"signature": t.column("signature"), "register_id": ids_arr, "register_nir": nirs},
                 schema=CLERICAL_SCHEMA)
    t = t.filter(pc.invert(pc.fill_null(pc.is_in(t.column("register_id"), value_set=pa.array(removed, pa.int64())),
                                        False)))
    if own is not None and own.num_rows:
        t = t.filter(pc.invert(pc.is_in(t.column("signature"), value_set=own.column("signature").combine_chunks())))
        t = pa.concat_tables([own.cast(CLERICAL_SCHEMA), t])
    return t
