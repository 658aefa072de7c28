"""The link stage of an increment: decisions of a previous run kept where nothing they rest on changed.

A signature's decision rests on its candidates (register rows) and the model. Between two
runs the register changes by entries added, removed (a duplicate merged away) or changed (a
correction of the compared fields); a death changes no compared field. So, with the previous
model:

- the register is compared with the previous run's, entry by entry (``register_diff``);
- the signatures are the union of the previous run's and this increment's rows' (row counts
  summed), bucket by bucket (``merge_signatures``); a new signature is *to do*, and so is a
  previous one deterministically linked to a removed or changed entry (it has no model
  candidates to keep); every other previous signature is *carried*: it keeps its previous
  model candidates but those of removed or changed entries (``carry_predictions``), and, when
  an added or changed entry can meet it (they are equal on every key of one of the model's
  blocking rules), it is *near* a change: scored against the added and changed entries only
  (every signature is to do when the model is retrained);
- a deterministic link depends only on the register entries of the signature's NIR: the
  previous run's are kept but for the signatures to do and those of a NIR whose entries were
  added, removed or changed, joined again (``deterministic_increment``); the signatures to do
  are scored against the whole register (``score_increment``); then every
  signature is decided as in a full run, and one whose person, status and method did not
  change keeps the previous run's probabilities and evidence (``carry_scores``).

A full run on the union of the data finds the same pairs: a pair's weight depends on the two
records, the model and the term frequencies only, never on the other records of its task, and
a carried signature's pairs are its previous ones with unchanged entries plus those with the
added and changed entries. The carried candidates' weights were computed with the previous
register's term frequencies (a full run's differ by the register's growth: hundredths of a
bit a month), and a carried decision's probabilities are those of the run that made it: a
full run on the union decides the same, with a ``match_probability`` (and evidence) that may
differ by that drift.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nirlink.kernels import InputError, StageError
from nirlink.kernels._segments import sorted_unique

from ._buckets import is_in_sorted, key_hash, read_bucket
from ._config import LinkConfig
from ._prepare import LINK_COLUMNS
from ._register import register_entries, register_files
from ._scoring import CANDIDATE_SCHEMA, score_rules
from ._signatures import SIGNATURE_SCHEMA
from ._tasks import Progress, run_tasks, share

__all__ = ["register_diff", "merge_signatures", "entry_keys", "meets", "deterministic_increment", "carry_predictions",
           "score_increment", "carry_scores", "LINEAGE_SHARE"]

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
                  rule_keys=None, keys: list[np.ndarray] | None = None, twins_moved=None) -> dict[str, int]:
    """Bucket ``bucket``: the union of the previous and new signatures (rows summed, sources
    or-ed) replaces this run's part; the signatures to do, near a change and carried (their
    ids) written apart, and this run's own (their ids and rows, for the drift check)."""
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
    new_ids = ~is_in_sorted(uid, sorted_unique(old_ids))
    todo = new_ids.copy() if not everything else np.ones(len(uid), bool)  # (a view: `new` counted todo)
    near = np.zeros(len(uid), bool)
    if not everything and len(invalid):
        # a deterministic link to a removed or changed entry: no model candidates kept, scored
        # against the whole register. A model candidate removed or changed is only left out of
        # the carried ones (carry_predictions): a pair with a changed entry's new values is one
        # ``meets`` finds, like any pair with an added entry
        det = read_bucket(p / "deterministic", bucket, CANDIDATE_SCHEMA)
        todo |= np.isin(uid, det.column("signature").to_numpy()[np.isin(det.column("register_id").to_numpy(),
                                                                        invalid)])
    if not everything and keys:  # a signature an added or changed entry can meet
        near |= meets(union, rule_keys, keys)
    twin_moved = np.zeros(len(uid), bool)
    if not everything and twins_moved:
        # a signature whose twin (an equal register entry on a fallback rule's columns) may have
        # come or gone: the fallback rules' candidates it had or lacks would differ from a full
        # run's, so it is scored again against the whole register
        from ._scoring import without_twin

        for cols, moved in twins_moved.items():
            twin_moved |= ~without_twin(union, cols, moved) & ~todo
        todo |= twin_moved
    near &= ~todo
    pq.write_table(union, w / "signatures" / name, compression="zstd")
    for d, sel in (("todo", todo), ("near", near), ("carry", ~todo)):
        (w / d).mkdir(exist_ok=True)
        pq.write_table(union.filter(pa.array(sel)).select(["unique_id"]) if d == "carry"
                       else union.filter(pa.array(sel)), w / d / name, compression="zstd")
    (w / "month").mkdir(exist_ok=True)  # this run's own signatures and their rows: for the drift check
    pq.write_table(new.select(["unique_id", "rows"]), w / "month" / name, compression="zstd")
    return {"signatures": len(uid), "new": int(new_ids.sum()), "todo": int(todo.sum()),
            "carried": int((~todo).sum()), "near_register_changes": int(near.sum()),
            "twin_changed": int(twin_moved.sum())}


def entry_keys(model, entries: pa.Table) -> tuple[list[tuple[str, ...]], list[np.ndarray]]:
    """Per blocking rule of ``model``: its left key columns and the distinct hashes of
    ``entries``' (register rows) right keys; ``meets`` finds the signatures equal to one. A
    key that is an expression (a model file may block on ``substr(surname, 1, 3)``) is left
    out with its pair: equal on fewer keys, more signatures are near, none missed (a rule's
    first key is a column: scoring partitions on it)."""
    from ._model_sql import is_identifier

    pairs = [[(a, b) for a, b in zip(rule.left_keys, rule.right_keys) if is_identifier(a) and is_identifier(b)]
             for rule in model.blocking]
    hashed = [key_hash(entries, [b for _, b in keys]) for keys in pairs]
    return [tuple(a for a, _ in keys) for keys in pairs], [sorted_unique(h[valid]) for h, valid in hashed]


def meets(signatures: pa.Table, rule_keys: list[tuple[str, ...]], keys: list[np.ndarray]) -> np.ndarray:
    """Which ``signatures`` some rule's equalities admit a pair for with an entry of
    ``entry_keys``: every left key equal to that entry's right key (hash equality: a collision
    only adds a signature, scored for nothing)."""
    out = np.zeros(signatures.num_rows, bool)
    for left_keys, k in zip(rule_keys, keys):
        h, valid = key_hash(signatures, list(left_keys))
        out |= valid & is_in_sorted(h, k)
    return out


def merge_signatures(previous: Path, work: Path, diff: dict[str, Any], cfg: LinkConfig, *, retrain: bool,
                     model=None, client=None, progress: Progress | None = None) -> dict[str, int]:
    """The union of the previous run's signatures and this run's; the signatures to do (new,
    or deterministically linked to a removed or changed entry), the carried ones and among
    them those near a change: those an added or changed entry can meet (equal to it on every
    key of one of ``model``'s rules: ``meets``)."""
    theirs = sorted((previous / "signatures").glob("part-*.parquet"))
    if len(theirs) != cfg.signature_buckets:
        raise StageError(f"link: the previous job has {len(theirs)} signature buckets, this run "
                         f"{cfg.signature_buckets} (setting nirlink.linkage.signature-buckets): give the previous "
                         "job's value")
    invalid = share(client, np.union1d(diff["removed"], diff["changed"]))
    rule_keys, keys = None, None
    fresh = np.union1d(diff["added"], diff["changed"])
    if len(fresh) and model is not None:
        # a pair exists only where a blocking rule's equalities all hold: a signature is near a
        # change when, for some rule, its left keys equal an added or changed entry's right keys
        # (the rule's condition and a fallback rule's filter only remove pairs). The first key
        # alone (a scoring partition) is far coarser: a common first name or birth year put half
        # of the signatures near some change at 200,000 persons (372,304 of 698,338)
        rule_keys, keys = entry_keys(model, register_entries(work, "unique_id", pa.array(fresh)))
        keys = share(client, keys)
    twins_moved = None
    if model is not None and not retrain and len(fresh) + len(diff["removed"]):
        from ._scoring import fallback_columns

        sets = fallback_columns(model)
        if sets:
            # the entries' values on the fallback columns before (removed, changed) and after
            # (added, changed): the twins that may have come or gone
            gone = np.union1d(diff["removed"], diff["changed"])
            cols_all = sorted({c for cols in sets for c in cols})
            parts = [_entries(register_files(work), fresh, cols_all),
                     _entries(_files_of(previous / "register"), gone, cols_all)]
            moved = {}
            for cols in sets:
                hs = [key_hash(t, list(cols)) for t in parts]
                moved[cols] = sorted_unique(np.concatenate([h[v] for h, v in hs]))
            twins_moved = share(client, moved)
    res = run_tasks(client, _merge_bucket, [(str(previous), str(work), b, invalid, retrain, rule_keys, keys,
                                             twins_moved)
                                            for b in range(cfg.signature_buckets)], name="increment-signatures",
                    progress=progress)
    return {k: sum(r[k] for r in res) for k in res[0]}


def _entries(files: list[str], ids: np.ndarray, columns: list[str]) -> pa.Table:
    """The register rows of ``files`` whose unique_id is in ``ids`` (``columns`` of them)."""
    schema = pa.schema([LINK_COLUMNS.field(c) for c in columns])
    if not files or not len(ids):
        return schema.empty_table()
    reg = pa.concat_tables([pq.read_table(f, columns=["unique_id", *columns]) for f in files])
    return reg.filter(pc.is_in(reg.column("unique_id"), value_set=pa.array(ids))).select(columns).cast(schema)


def _files_of(d: Path) -> list[str]:
    return [str(f) for f in sorted(d.glob("*.parquet"))]


def _carry_bucket(previous: str, work: str, bucket: int, invalid: np.ndarray) -> int:
    """The previous model candidates of the carried signatures of ``bucket`` that the
    deterministic pass did not link this time (a full run scores only those), but those of a
    removed or changed (``invalid``) register entry."""
    w = Path(work)
    carried = pq.read_table(w / "carry" / f"part-{bucket:05d}.parquet", columns=["unique_id"])
    det = read_bucket(w / "deterministic", bucket, CANDIDATE_SCHEMA).column("signature")
    cands = read_bucket(Path(previous) / "predictions", bucket, CANDIDATE_SCHEMA)
    sig = cands.column("signature")
    keep = pc.and_(pc.is_in(sig, value_set=carried.column("unique_id").combine_chunks()),
                   pc.invert(pc.is_in(sig, value_set=det.combine_chunks())))
    if len(invalid):
        keep = pc.and_(keep, pc.invert(pc.is_in(cands.column("register_id"), value_set=pa.array(invalid))))
    cands = cands.filter(keep)
    if cands.num_rows:
        target = w / "predictions" / f"b={bucket:05d}" / "previous.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(cands, target, compression="zstd")
    return cands.num_rows


def carry_predictions(previous: Path, work: Path, diff: dict[str, Any], cfg: LinkConfig, *, client=None,
                      progress: Progress | None = None) -> int:
    invalid = share(client, np.union1d(diff["removed"], diff["changed"]))
    res = run_tasks(client, _carry_bucket, [(str(previous), str(work), b, invalid)
                                            for b in range(cfg.signature_buckets)],
                    name="increment-carry", progress=progress)
    return sum(res)


def _det_bucket(previous: str, work: str, bucket: int, nirs: np.ndarray, entries: pa.Table, threads: int,
                memory_limit: str | None) -> int:
    """The deterministic links of ``bucket``'s signatures: the previous job's, but for the
    signatures to do and those whose NIR is one of ``nirs`` (an added, removed or changed
    entry's, before or after), joined again with ``entries`` (the register entries of those
    NIRs and of the signatures to do)."""
    from ._deterministic import _DET_SQL, _det_links
    from ._splink import duckdb_connection

    w = Path(work)
    name = f"part-{bucket:05d}.parquet"
    sigs = pq.read_table(w / "signatures" / name, schema=SIGNATURE_SCHEMA)
    todo = pq.read_table(w / "todo" / name, columns=["unique_id"]).column("unique_id") \
        if (w / "todo" / name).exists() else pa.chunked_array([], pa.int64())
    again = pc.or_(pc.is_in(sigs.column("unique_id"), value_set=todo.combine_chunks()),
                   pc.fill_null(pc.is_in(sigs.column("nir"), value_set=pa.array(nirs, pa.string())), False))
    prev = read_bucket(Path(previous) / "deterministic", bucket, CANDIDATE_SCHEMA)
    kept = prev.filter(pc.invert(pc.is_in(prev.column("signature"),
                                          value_set=sigs.column("unique_id").filter(again).combine_chunks())))
    s = sigs.filter(pc.and_(again, pc.is_valid(sigs.column("nir"))))
    parts = [kept]
    if s.num_rows and entries.num_rows:
        with duckdb_connection(threads=threads, memory_limit=memory_limit) as con:
            con.register("s", s)
            con.register("r", entries)
            parts.append(_det_links(con.sql(_DET_SQL).to_arrow_table()))
    links = pa.concat_tables(parts)
    target = w / "deterministic" / f"b={bucket:05d}" / f"det-{bucket:05d}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(links, target, compression="zstd", compression_level=1)
    return links.num_rows


def deterministic_increment(previous: Path, work: Path, diff: dict[str, Any], cfg: LinkConfig, *, client=None,
                            progress: Progress | None = None) -> dict[str, Any]:
    """The deterministic pass of an increment: a signature's deterministic link depends only on
    the register entries of its NIR, so the previous job's links are kept but for the
    signatures to do and those of a NIR whose entries were added, removed or changed (a
    changed entry by its NIR before and after), which are joined again (``_DET_SQL``)."""
    from ._deterministic import DETERMINISTIC_RULE

    changed = np.union1d(diff["added"], diff["changed"])
    gone = np.union1d(diff["removed"], diff["changed"])
    nirs = np.union1d(_entries(register_files(work), changed, ["nir"]).column("nir").drop_null().to_numpy(
                          zero_copy_only=False),
                      _entries(_files_of(previous / "register"), gone, ["nir"]).column("nir").drop_null().to_numpy(
                          zero_copy_only=False)).astype(object)
    todo = [pq.read_table(f, columns=["nir"]).column("nir") for f in _files_of(work / "todo")]
    wanted = pa.concat_arrays([pa.array(nirs, pa.string()), *[c for t in todo for c in t.chunks]])
    entries = share(client, register_entries(work, "nir", pc.unique(wanted)).select(LINK_COLUMNS.names)
                    .cast(LINK_COLUMNS))
    linked = run_tasks(client, _det_bucket, [(str(previous), str(work), b, nirs, entries, cfg.duckdb_threads,
                                              cfg.duckdb_memory_limit) for b in range(cfg.signature_buckets)],
                       name="deterministic-increment", progress=progress)
    return {"linked_signatures": sum(linked), "rule": DETERMINISTIC_RULE, "joined_again_nirs": len(nirs)}


def _files(d: Path) -> list[str]:
    return [str(f) for f in sorted(d.glob("part-*.parquet")) if pq.read_metadata(f).num_rows]


def _near_pairs(work: str, bucket: int, fresh: np.ndarray) -> dict[int, int]:
    """Drop the pairs of ``bucket``'s signatures near a change with an entry neither added nor
    changed: their pairs with those are the carried candidates. Returns the dropped pairs per
    rule."""
    w = Path(work)
    near = w / "near" / f"part-{bucket:05d}.parquet"
    d = w / "predictions" / f"b={bucket:05d}"
    if not near.exists() or not d.exists():
        return {}
    ids = pq.read_table(near, columns=["unique_id"]).column("unique_id").combine_chunks()
    dropped: Counter = Counter()
    for f in sorted(d.glob("scored-*.parquet")):
        t = pq.read_table(f, schema=CANDIDATE_SCHEMA)
        drop = pc.and_(pc.is_in(t.column("signature"), value_set=ids),
                       pc.invert(pc.is_in(t.column("register_id"), value_set=pa.array(fresh, pa.int64()))))
        if not pc.any(drop).as_py():
            continue
        dropped.update(t.filter(drop).column("rule").to_pylist())
        tmp = f.with_name(f".{f.name}.tmp")
        pq.write_table(t.filter(pc.invert(drop)), tmp, compression="zstd")
        os.replace(tmp, f)
    return dict(dropped)


def score_increment(work: Path, model, tf, cfg: LinkConfig, diff: dict[str, Any], *, client=None,
                    progress: Progress | None = None) -> dict[str, Any] | None:
    """Score the signatures to do against the whole register, and the carried signatures near
    a register change against the added and changed entries only (their pairs with the other
    entries are the carried candidates); the candidates land in ``predictions/`` beside the
    carried ones. Both are scored in one pass against the whole register (a pass has a fixed
    cost: Splink called per partition group, both sides partitioned), then the pairs of a
    near signature with an entry neither added nor changed are dropped (``_near_pairs``)."""
    todo, near = _files(work / "todo"), _files(work / "near")
    fresh = np.union1d(diff["added"], diff["changed"])
    if not len(fresh):
        near = []
    left = []
    (work / "score-left").mkdir(exist_ok=True)
    for name in sorted({Path(f).name for f in todo + near}):  # one left file per signature bucket
        parts = [pq.read_table(d / name) for d in (work / "todo", work / "near") if str(d / name) in todo + near]
        pq.write_table(pa.concat_tables(parts), work / "score-left" / name, compression="zstd")
        left.append(str(work / "score-left" / name))
    out = None
    if left:
        out = score_rules(work, model, tf, cfg, left_files=left, right_files=register_files(work),
                          out=work / "predictions", schema=LINK_COLUMNS, exclude_linked=True, candidates=True,
                          client=client, progress=progress, part_prefix="scored-")
        dropped: Counter = Counter()
        if near:
            for r in run_tasks(client, _near_pairs, [(str(work), b, fresh) for b in range(cfg.signature_buckets)],
                               name="increment-near", progress=progress):
                dropped.update(r)
        for rule, n in dropped.items():  # the figures of the candidates kept
            name = model.blocking[rule].name
            out["pairs_per_rule"][name] -= n
        out["pairs"] -= sum(dropped.values())
        out["near_pairs_dropped"] = sum(dropped.values())
    for d in ("todo", "near", "carry", "score-left"):
        shutil.rmtree(work / d, ignore_errors=True)
    return out


DECISION_COLUMNS = ["person", "status", "method"]
SCORE_COLUMNS = ["match_probability", "match_weight", "runner_up_probability", "evidence", "runner_up_evidence"]


def carry_scores(links: pa.Table, previous: pa.Table) -> tuple[pa.Table, int]:
    """``links`` with the previous run's scores (``SCORE_COLUMNS``) where a signature's decision
    (``DECISION_COLUMNS``) did not change: its rows' attached columns stay the previous job's
    and their person buckets are not rewritten for a probability that moved with the
    register's term frequencies. Returns the table and how many signatures kept their scores."""
    pos = pc.index_in(links.column("signature"), value_set=previous.column("signature").combine_chunks())
    same = pc.is_valid(pos)
    before = previous.take(pos)
    for c in DECISION_COLUMNS:
        a, b = links.column(c), before.column(c)
        same = pc.and_(same, pc.or_(pc.fill_null(pc.equal(a, b), False), pc.and_(pc.is_null(a), pc.is_null(b))))
    for c in SCORE_COLUMNS:
        i = links.schema.get_field_index(c)
        links = links.set_column(i, links.field(c), pc.if_else(same, before.column(c), links.column(c)))
    return links, int(pc.sum(same).as_py() or 0)
