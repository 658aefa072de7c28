"""The link stage of an increment: decisions of a previous run kept where nothing they rest on changed.

A signature's decision rests on its candidates (register rows) and the model. Between two
runs the register changes by entries added, removed (a duplicate merged away) or changed (a
correction of the compared fields); a death changes no compared field. So, with the previous
model:

- the register is compared with the previous run's, entry by entry (``register_diff``);
- the signatures are the union of the previous run's and this increment's rows' (row counts
  summed), bucket by bucket (``merge_signatures``); a previous signature is *carried* when
  none of its previous candidates was removed or changed, else it is *to do* with the new
  ones (every signature is to do when the model is retrained),
  and so is a signature that an added or changed entry can meet (it shares the entry's key
  of some partition group of the model's blocking rules);
- the deterministic pass runs again on every signature (a join on the NIR: cheap); the
  carried signatures keep their previous model candidates (``carry_predictions``); the
  signatures to do are scored against the whole register (``score_increment``); then every
  signature is decided as in a full run.

A full run on the union of the data finds the same pairs: a pair's weight depends on the two
records, the model and the term frequencies only, never on the other records of its task.
The carried candidates' weights were computed with the previous register's term frequencies
(a full run's differ by the register's growth: hundredths of a bit a month).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nirlink.kernels import InputError, StageError

from ._buckets import read_bucket
from ._config import LinkConfig
from ._prepare import LINK_COLUMNS
from ._register import register_files
from ._scoring import CANDIDATE_SCHEMA, score_rules
from ._signatures import SIGNATURE_SCHEMA
from ._tasks import Progress, run_tasks, share

__all__ = ["register_diff", "merge_signatures", "carry_predictions", "score_increment", "LINEAGE_SHARE"]

LINEAGE_SHARE = 0.5  # below this share of the previous register's entries still present: another register


def _glob(d: Path) -> str:
    return str(d / "*.parquet")


def register_diff(previous: Path, work: Path) -> dict[str, Any]:
    """Entries of this run's register added, removed or changed (a compared field differs)
    since the previous run's (``previous``: its link directory). Raises InputError when the
    two registers do not share LINEAGE_SHARE of the previous entries (another register)."""
    import duckdb

    cols = [c for c in LINK_COLUMNS.names if c != "unique_id"]
    differs = " or ".join(f"p.{c} is distinct from n.{c}" for c in cols)
    con = duckdb.connect()
    con.execute("SET threads = 1")
    t = con.sql(f"""
        select coalesce(n.unique_id, p.unique_id) as unique_id,
               case when p.unique_id is null then 'added' when n.unique_id is null then 'removed'
                    else 'changed' end as change
        from read_parquet('{_glob(previous / "register")}') p
        full outer join read_parquet('{_glob(work / "register")}') n on n.unique_id = p.unique_id
        where p.unique_id is null or n.unique_id is null or {differs}
        order by unique_id""").to_arrow_table()
    n_prev = con.execute(f"select count(*) from read_parquet('{_glob(previous / 'register')}')").fetchall()[0][0]
    con.close()
    change = t.column("change").to_numpy(zero_copy_only=False)
    ids = t.column("unique_id").to_numpy()
    out = {k: np.sort(ids[change == k]) for k in ("added", "removed", "changed")}
    kept = n_prev - len(out["removed"])
    if n_prev and kept < LINEAGE_SHARE * n_prev:
        raise InputError(f"register: only {kept:,} of the previous job's {n_prev:,} register entries are in this "
                         f"job's register ({len(out['added']):,} added): another register, not the next snapshot "
                         f"of the previous job's ({previous.parent})")
    return out


def _merge_bucket(previous: str, work: str, bucket: int, invalid: np.ndarray, everything: bool,
                  groups=None, keys: list[np.ndarray] | None = None) -> dict[str, int]:
    """Bucket ``bucket``: the union of the previous and new signatures (rows summed, sources
    or-ed) replaces this run's part; the signatures to do and the carried ones written apart."""
    p, w = Path(previous), Path(work)
    name = f"part-{bucket:05d}.parquet"
    prev = pq.read_table(p / "signatures" / name, schema=SIGNATURE_SCHEMA) if (p / "signatures" / name).exists() \
        else SIGNATURE_SCHEMA.empty_table()
    new = pq.read_table(w / "signatures" / name, schema=SIGNATURE_SCHEMA)
    both = pa.concat_tables([prev, new])
    ids = both.column("unique_id").to_numpy()
    order = np.argsort(ids, kind="stable")
    both = both.take(pa.array(order))
    ids = ids[order]
    starts = np.r_[0, np.flatnonzero(ids[1:] != ids[:-1]) + 1] if len(ids) else np.zeros(0, np.int64)
    union = both.take(pa.array(starts))
    if len(ids):
        rows = np.add.reduceat(both.column("rows").to_numpy(), starts)
        sources = np.bitwise_or.reduceat(both.column("sources").to_numpy(), starts).astype(np.int8)
        union = union.set_column(SIGNATURE_SCHEMA.names.index("rows"), "rows", pa.array(rows))
        union = union.set_column(SIGNATURE_SCHEMA.names.index("sources"), "sources", pa.array(sources))
    uid = union.column("unique_id").to_numpy()
    old_ids = prev.column("unique_id").to_numpy()
    todo = ~np.isin(uid, old_ids) if not everything else np.ones(len(uid), bool)
    if not everything and len(invalid):
        cands = pa.concat_tables([read_bucket(p / "predictions", bucket, CANDIDATE_SCHEMA),
                                  read_bucket(p / "deterministic", bucket, CANDIDATE_SCHEMA)])
        touched = cands.column("signature").to_numpy()[np.isin(cands.column("register_id").to_numpy(), invalid)]
        todo |= np.isin(uid, touched)
    near = np.zeros(len(uid), bool)
    if not everything and keys:  # a signature an added or changed entry can meet: scored again
        from ._buckets import key_hash

        for (lk, _, _), k in zip(groups, keys):
            h, valid = key_hash(union, [lk])
            near |= valid & np.isin(h, k)
        todo |= near
    pq.write_table(union, w / "signatures" / name, compression="zstd")
    new_ids = ~np.isin(uid, old_ids)
    for d, sel in (("todo", todo), ("carry", ~todo), ("new", new_ids)):  # new: for the drift check
        (w / d).mkdir(exist_ok=True)
        pq.write_table(union.filter(pa.array(sel)).select(["unique_id"]) if d == "new" else union.filter(pa.array(sel)),
                       w / d / name, compression="zstd")
    return {"signatures": len(uid), "new": int(new_ids.sum()), "near_register_changes": int(near.sum()),
            "todo": int(todo.sum()),
            "carried": int((~todo).sum())}


def merge_signatures(previous: Path, work: Path, diff: dict[str, Any], cfg: LinkConfig, *, retrain: bool,
                     model=None, client=None, progress: Progress | None = None) -> dict[str, int]:
    """The union of the previous run's signatures and this run's, and the signatures to do:
    the new ones, those with a removed or changed candidate, and those an added or changed
    entry can meet (they share its key of some partition group of ``model``'s rules: every
    rule of a group implies equal keys)."""
    theirs = sorted((previous / "signatures").glob("part-*.parquet"))
    if len(theirs) != cfg.signature_buckets:
        raise StageError(f"link: the previous job has {len(theirs)} signature buckets, this run "
                         f"{cfg.signature_buckets} (setting nirlink.linkage.signature-buckets): give the previous "
                         "job's value")
    invalid = share(client, np.union1d(diff["removed"], diff["changed"]))
    groups, keys = None, None
    fresh = np.union1d(diff["added"], diff["changed"])
    if len(fresh) and model is not None:
        from ._buckets import key_hash
        from ._scoring import partition_groups

        reg = pa.concat_tables([pq.read_table(f) for f in register_files(work)])
        reg = reg.filter(pc.is_in(reg.column("unique_id"), value_set=pa.array(fresh)))
        groups = partition_groups(model)
        hashed = [key_hash(reg, [rk]) for _, rk, _ in groups]
        keys = share(client, [np.unique(h[valid]) for h, valid in hashed])
    res = run_tasks(client, _merge_bucket, [(str(previous), str(work), b, invalid, retrain, groups, keys)
                                            for b in range(cfg.signature_buckets)], name="increment-signatures",
                    progress=progress)
    return {k: sum(r[k] for r in res) for k in res[0]}


def _carry_bucket(previous: str, work: str, bucket: int) -> int:
    """The previous model candidates of the carried signatures of ``bucket`` that the
    deterministic pass did not link this time (a full run scores only those)."""
    w = Path(work)
    carried = pq.read_table(w / "carry" / f"part-{bucket:05d}.parquet", columns=["unique_id"])
    det = read_bucket(w / "deterministic", bucket, CANDIDATE_SCHEMA).column("signature")
    cands = read_bucket(Path(previous) / "predictions", bucket, CANDIDATE_SCHEMA)
    sig = cands.column("signature")
    keep = pc.and_(pc.is_in(sig, value_set=carried.column("unique_id").combine_chunks()),
                   pc.invert(pc.is_in(sig, value_set=det.combine_chunks())))
    cands = cands.filter(keep)
    if cands.num_rows:
        target = w / "predictions" / f"b={bucket:05d}" / "previous.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(cands, target, compression="zstd")
    return cands.num_rows


def carry_predictions(previous: Path, work: Path, cfg: LinkConfig, *, client=None,
                      progress: Progress | None = None) -> int:
    res = run_tasks(client, _carry_bucket, [(str(previous), str(work), b) for b in range(cfg.signature_buckets)],
                    name="increment-carry", progress=progress)
    return sum(res)


def _files(d: Path) -> list[str]:
    return [str(f) for f in sorted(d.glob("part-*.parquet")) if pq.read_metadata(f).num_rows]


def score_increment(work: Path, model, tf, cfg: LinkConfig, *, client=None,
                    progress: Progress | None = None) -> dict[str, Any] | None:
    """Score the signatures to do against the whole register; their candidates land in
    ``predictions/`` beside the carried ones."""
    todo = _files(work / "todo")
    out = score_rules(work, model, tf, cfg, left_files=todo, right_files=register_files(work),
                      out=work / "predictions", schema=LINK_COLUMNS, exclude_linked=True, candidates=True,
                      client=client, progress=progress) if todo else None
    for d in ("todo", "carry"):
        shutil.rmtree(work / d, ignore_errors=True)
    return out
