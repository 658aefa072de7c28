"""Phase 7 of the link stage: one decision per signature from its candidates."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nirlink.kernels import ModelError
from nirlink.kernels._segments import sorted_unique

from ._buckets import is_in_sorted, read_bucket, sorted_id_options
from ._config import LinkConfig
from ._model import ModelSpec, prior_bits
from ._scoring import CANDIDATE_SCHEMA
from ._tasks import Progress, run_tasks, share

__all__ = ["STATUS", "METHODS", "LINK_SCHEMA", "CANDIDATE_RANK_SCHEMA", "CLERICAL_SCHEMA", "CANDIDATES_KEPT",
           "DECISION_RULE", "decide", "decision_rule"]

STATUS = ("linked", "ambiguous", "unlinked")
METHODS = ("nir", "model", "clerical")
LINK_SCHEMA = pa.schema([
    pa.field("signature", pa.int64(), nullable=False),
    pa.field("person", pa.string()),  # canonical NIR of the person (register cluster)
    pa.field("register_nir", pa.string()),  # the register row the signature matched
    pa.field("method", pa.string()),
    pa.field("match_probability", pa.float64()),
    pa.field("match_weight", pa.float64()),
    pa.field("runner_up_probability", pa.float64()),
    pa.field("candidates", pa.int32(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("nir_status", pa.string()),
    pa.field("rows", pa.int64(), nullable=False),
    pa.field("evidence", pa.float64()),  # bits: match_weight without the prior (null for 'nir' links)
    pa.field("runner_up_evidence", pa.float64()),
])


CANDIDATES_KEPT = 3  # per signature, in link/candidates/: what `nirlink explain` and the review show
CANDIDATE_RANK_SCHEMA = pa.schema([
    pa.field("signature", pa.int64(), nullable=False),
    pa.field("rank", pa.int8(), nullable=False),
    pa.field("person", pa.string(), nullable=False),
    pa.field("register_id", pa.int64(), nullable=False),
    pa.field("register_nir", pa.string(), nullable=False),
    pa.field("method", pa.string(), nullable=False),
    pa.field("evidence", pa.float64()),  # bits, prior excluded; null for a deterministic link
    pa.field("match_weight", pa.float64(), nullable=False),
    pa.field("match_probability", pa.float64(), nullable=False),
    pa.field("rule", pa.int16(), nullable=False),
])
CLERICAL_SCHEMA = pa.schema([
    pa.field("signature", pa.int64(), nullable=False),
    pa.field("register_id", pa.int64()),  # null: "none of the register"
    pa.field("register_nir", pa.string()),
])

# Candidates merged per person (register duplicates clustered into one person), ranked by
# evidence: the comparisons' Bayes factor in bits, the match weight without the prior
# (deterministic links: +inf). A person's register entry is its entry of highest evidence, the
# smallest register id among equals (two entries of one person often compare alike): never the
# order the pairs arrived in, which differs between Splink's own SQL and its replay. One
# arg_max of the entry's fields (not one per field: 2.8 s against 4.1-6.1 s for 5M candidates).
_RANKED_SQL = """
create temp table ranked as
with cand as (
  select c.signature, coalesce(k.person, c.register_nir) as person, c.register_id, c.register_nir,
         c.match_probability, c.match_weight, c.rule, case when c.rule < 0 then 'nir' else 'model' end as method,
         case when c.rule < 0 then 'inf'::double else c.match_weight - ({prior_bits}) end as e
  from c left join k on k.unique_id = c.register_id),
best_entry as (
  select signature, person, max(e) as e, max(match_weight) as w, max(match_probability) as splink_p,
         arg_max(struct_pack(register_nir, register_id, method, rule), (e, -register_id)) as b
  from cand group by signature, person),
per_person as (
  select signature, person, e, w, splink_p, b.register_nir as register_nir, b.register_id as register_id,
         b.method as method, b.rule as rule
  from best_entry)
select *, row_number() over (partition by signature order by e desc, person) as rk,
       count(*) over (partition by signature) as n, max(e) over (partition by signature) as e_max
from per_person
"""

_DECIDE_SQL = """
with shares as (
  -- 2**(e - e_max) summed over the candidates, and the 'none' option's 2**(none - e_max)
  select *, sum(case when e = e_max then 1.0 else pow(2.0, greatest(e - e_max, -1074)) end)
              over (partition by signature) as z,
         case when e_max = 'inf'::double then 0.0 else pow(2.0, least({none_weight} - e_max, 1023)) end as z0
  from ranked),
best as (
  select b.signature, b.person, b.register_nir, b.method, b.e, b.w, b.n, b.z, b.z0, s.e as e2
  from shares b left join shares s on s.signature = b.signature and s.rk = 2
  where b.rk = 1),
decided as (
  select *, 1.0 / (z + z0) as p,
         case when e2 is null then null when e2 = 'inf'::double then 1.0 / (z + z0)
              else pow(2.0, greatest(e2 - e, -1074)) / (z + z0) end as p2,
         1.0 / (1.0 + z0) as p_alone,
         case
           when method = 'nir' then 'linked'
           when 1.0 / (z + z0) >= {threshold} and (e2 is null or e - e2 >= {margin}) then 'linked'
           when 1.0 / (1.0 + z0) >= {threshold} then 'ambiguous'
           else 'unlinked' end as status
  from best)
select g.unique_id as signature,
       case when d.signature is not null then coalesce(k.person, d.register_nir)
            when x.status = 'linked' then x.person end as person,
       case when d.signature is not null then d.register_nir when x.status = 'linked' then x.register_nir end
         as register_nir,
       case when d.signature is not null then 'clerical' else x.method end as method,
       x.p as match_probability, x.w as match_weight, x.p2 as runner_up_probability,
       coalesce(x.n, 0)::int as candidates,
       case when d.signature is not null then (case when d.register_nir is null then 'unlinked' else 'linked' end)
            else coalesce(x.status, 'unlinked') end as status,
       g.nir_status, g.rows,
       case when x.e = 'inf'::double then null else x.e end as evidence,
       case when x.e2 = 'inf'::double then null else x.e2 end as runner_up_evidence
from g left join decided x on x.signature = g.unique_id
left join d on d.signature = g.unique_id
left join k on k.unique_id = d.register_id
"""
DECISION_RULE = ("clerical decisions first; then deterministic 'nir' links stand; otherwise, per signature, the "
                 "candidates' evidence e (match weight minus the prior's log-odds: the comparisons' Bayes factor in "
                 "bits, independent of the register's size), best per person; linked when the best person's share "
                 "p = 2**e1 / (2**none_weight + sum of 2**e over the candidates) >= threshold and e1 - e2 >= margin "
                 "bits over the runner-up; ambiguous when 2**e1 / (2**none_weight + 2**e1) >= threshold but not "
                 "linked; else unlinked. match_probability is p, runner_up_probability the runner-up's share.")


def decision_rule(model: ModelSpec) -> dict[str, float]:
    """The decision's parameters (model section ``decision``) and the trained prior's log-odds."""
    d = model.decision
    if d.get("rule", "evidence") != "evidence":
        raise ModelError(f"model {model.name!r}: unknown decision rule {d.get('rule')!r} (known: 'evidence')")
    return {"threshold": float(d.get("threshold", 0.9)), "margin": float(d.get("margin", 5.0)),
            "none_weight": float(d.get("none_weight", 8.0)), "prior_bits": prior_bits(model)}


def _decide_bucket(work: str, bucket: int, clusters: pa.Table, clerical: pa.Table,
                   rule: dict[str, float], previous: str | None = None) -> dict[str, int]:
    w = Path(work)
    sig = pq.read_table(w / "signatures" / f"part-{bucket:05d}.parquet", columns=["unique_id", "nir_status", "rows"])
    cands = pa.concat_tables([read_bucket(w / "deterministic", bucket, CANDIDATE_SCHEMA),
                              read_bucket(w / "predictions", bucket, CANDIDATE_SCHEMA)])
    links, kept = _decide(sig, cands, clusters, clerical, rule)
    out = {}
    if previous is not None:  # an increment: an unchanged decision keeps the previous run's scores
        from ._increment import carry_scores

        links, out["scores_carried"] = carry_scores(links, pq.read_table(Path(previous) / "links" /
                                                                         f"part-{bucket:05d}.parquet"))
    # both sorted by signature (the candidates by signature, then rank)
    pq.write_table(links, w / "links" / f"part-{bucket:05d}.parquet", **sorted_id_options(links.schema, "signature"))
    pq.write_table(kept, w / "candidates" / f"part-{bucket:05d}.parquet",
                   **sorted_id_options(CANDIDATE_RANK_SCHEMA, "signature"))
    out.update(_counts(links))
    return out


def _decide(sig: pa.Table, cands: pa.Table, clusters: pa.Table, clerical: pa.Table,
            rule: dict[str, float]) -> tuple[pa.Table, pa.Table]:
    """The links (LINK_SCHEMA) of the signatures ``sig`` and their kept candidates
    (CANDIDATE_RANK_SCHEMA), both sorted by signature. A signature whose only candidate is a
    deterministic link, without a clerical decision (most of them: 80% at 2M persons), is
    decided here as the SQL would (linked by 'nir' to the entry's person, share 1); the others
    by the SQL (_RANKED_SQL, _DECIDE_SQL). The SQL alone took 2.1 s of a 4.1 s bucket of
    866,000 signatures at 2M persons; its window functions ran over every candidate."""
    import duckdb

    # each candidate's signature's row in ``sig`` (one lookup, used three times below)
    at = pc.index_in(cands.column("signature"), value_set=sig.column("unique_id"))
    alone = _alone(cands, clerical)
    # as the SQL's ``g left join``: a candidate of a signature the bucket does not list is no link
    alone &= np.asarray(at.is_valid())
    at_alone = at.filter(pa.array(alone))
    links_a, kept_a = _decided_alone(sig, cands.filter(alone), at_alone, clusters)
    decided = np.zeros(sig.num_rows, bool)
    decided[np.asarray(at_alone, np.int64)] = True
    con = duckdb.connect()
    con.execute("SET threads = 1")
    con.register("g", sig.filter(pa.array(~decided)))
    con.register("c", cands.filter(pa.array(~alone)))
    con.register("k", clusters)
    con.register("d", clerical)
    values = {k: repr(float(v)) for k, v in rule.items()}
    con.execute(_RANKED_SQL.format(**values))
    links = con.sql(_DECIDE_SQL.format(**values)).to_arrow_table()
    kept = con.sql(f"""select signature, rk::tinyint as rank, person, register_id, register_nir, method,
                              case when e = 'inf'::double then null else e end as evidence,
                              w as match_weight, splink_p as match_probability, rule
                       from ranked where rk <= {CANDIDATES_KEPT} order by signature, rk""").to_arrow_table()
    con.close()
    links = pa.concat_tables([links_a, links.select(LINK_SCHEMA.names).cast(LINK_SCHEMA)])
    kept = pa.concat_tables([kept_a, kept.cast(CANDIDATE_RANK_SCHEMA)])
    # stable: a signature's kept candidates stay in rank order
    return (links.take(np.argsort(links.column("signature").to_numpy(), kind="stable")),
            kept.take(np.argsort(kept.column("signature").to_numpy(), kind="stable")))


def _alone(cands: pa.Table, clerical: pa.Table) -> np.ndarray:
    """Candidates that are their signature's only one, a deterministic link (rule < 0), of a
    signature without a clerical decision."""
    s = cands.column("signature").to_numpy()
    if len(s) == 0:
        return np.zeros(0, bool)
    order = np.argsort(s, kind="stable")
    ss = s[order]
    single = np.ones(len(s), bool)
    same = ss[1:] == ss[:-1]
    single[1:] &= ~same
    single[:-1] &= ~same
    alone = np.empty(len(s), bool)
    alone[order] = single
    alone &= cands.column("rule").to_numpy() < 0
    if clerical.num_rows:
        alone &= ~is_in_sorted(s, sorted_unique(clerical.column("signature").to_numpy()))
    return alone


def _decided_alone(sig: pa.Table, c: pa.Table, at: pa.Array, clusters: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Links and kept candidates of signatures whose one candidate ``c`` is a deterministic
    link (``at``: each one's signature's row in ``sig``): what _RANKED_SQL and _DECIDE_SQL give
    for them (the entry's person, its cluster's or its own NIR; share 1.0 = 1 / (1 + 0): the
    only term of e_max = inf, 'none' 0; no runner-up; evidence null)."""
    n = c.num_rows
    pos = pc.index_in(c.column("register_id"), value_set=clusters.column("unique_id"))
    person = pc.coalesce(pc.take(clusters.column("person"), pos), c.column("register_nir"))
    nir = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)), pa.array(["nir"])).cast(pa.string())
    null_f = pa.nulls(n, pa.float64())
    links = pa.table({
        "signature": c.column("signature"), "person": person, "register_nir": c.column("register_nir"), "method": nir,
        "match_probability": pa.array(np.ones(n)), "match_weight": c.column("match_weight"),
        "runner_up_probability": null_f, "candidates": pa.array(np.ones(n, np.int32)),
        "status": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)), pa.array(["linked"])).cast(pa.string()),
        "nir_status": pc.take(sig.column("nir_status"), at), "rows": pc.take(sig.column("rows"), at),
        "evidence": null_f, "runner_up_evidence": null_f}, schema=LINK_SCHEMA)
    kept = pa.table({
        "signature": c.column("signature"), "rank": pa.array(np.ones(n, np.int8)), "person": person,
        "register_id": c.column("register_id"), "register_nir": c.column("register_nir"), "method": nir,
        "evidence": null_f, "match_weight": c.column("match_weight"),
        "match_probability": c.column("match_probability"), "rule": c.column("rule")}, schema=CANDIDATE_RANK_SCHEMA)
    return links, kept


def _counts(links: pa.Table) -> dict[str, int]:
    """The decisions' counts of a bucket's links: signatures and rows per status, linked per
    method, and per NIR status (null: 'unknown'). One group-by (numpy comparisons of the
    string columns took ~1 s a bucket of 866,000 signatures)."""
    g = pa.table({"status": links.column("status"), "method": pc.fill_null(links.column("method"), ""),
                  "nir_status": pc.fill_null(links.column("nir_status"), "unknown"), "rows": links.column("rows")})
    groups = g.group_by(["status", "method", "nir_status"]).aggregate([("rows", "count"), ("rows", "sum")]).to_pylist()
    n = Counter()
    for r in groups:
        st, meth, ns, count = r["status"], r["method"], r["nir_status"], int(r["rows_count"])
        n[f"signatures_{st}"] += count
        n[f"rows_{st}"] += int(r["rows_sum"] or 0)
        if st == "linked":
            n[f"linked_by_{meth}"] += count
        n[f"{meth}_decided"] += count
        what = f"linked_{meth}" if st == "linked" else st
        n[f"by_nir_status.{ns}.{what}"] += count
    out = {}
    for s in STATUS:
        out[f"signatures_{s}"] = n[f"signatures_{s}"]
        out[f"rows_{s}"] = n[f"rows_{s}"]
    for m in METHODS:
        out[f"linked_by_{m}"] = n[f"linked_by_{m}"]
    out["decided_by_clerical"] = n["clerical_decided"]
    for ns in sorted({r["nir_status"] for r in groups}):
        for what in ("linked_nir", "linked_model", "ambiguous", "unlinked"):
            out[f"by_nir_status.{ns}.{what}"] = n[f"by_nir_status.{ns}.{what}"]
    return out


def decide(work: Path, model: ModelSpec, cfg: LinkConfig, *, clerical: pa.Table | None = None, client=None,
           progress: Progress | None = None, previous: Path | None = None) -> dict:
    """Per signature: the best person (register clusters merged), its probability, the runner-up,
    the status; clerical decisions (``CLERICAL_SCHEMA``, validated by _clerical.py) take
    precedence over the model and the deterministic pass. Writes ``links/`` and, for explain
    and review, each signature's best ``CANDIDATES_KEPT`` candidates in ``candidates/``. With
    ``previous`` (an increment: the previous run's link directory) a signature whose person,
    status and method are the previous run's keeps that run's probabilities and evidence
    (``_increment.carry_scores``)."""
    (work / "links").mkdir(parents=True, exist_ok=True)
    (work / "candidates").mkdir(parents=True, exist_ok=True)
    clusters = pq.read_table(work / "clusters.parquet") if (work / "clusters.parquet").exists() else \
        pa.table({"unique_id": pa.array([], pa.int64()), "person": pa.array([], pa.string())})
    clusters = clusters.select(["unique_id", "person"])
    rule = decision_rule(model)
    shared = share(client, clusters)
    clerical = clerical if clerical is not None else CLERICAL_SCHEMA.empty_table()
    shared_clerical = share(client, clerical)
    res = run_tasks(client, _decide_bucket, [(str(work), b, shared, shared_clerical, rule,
                                              None if previous is None else str(previous))
                                             for b in range(cfg.signature_buckets)], name="decide", progress=progress)
    total = Counter()
    for r in res:
        total.update(r)
    by: dict[str, dict[str, int]] = {}
    flat = {}
    for k, v in total.items():
        if k.startswith("by_nir_status."):
            _, status, what = k.split(".")
            by.setdefault(status, {})[what] = v
        else:
            flat[k] = v
    return {"rule": DECISION_RULE, "threshold": rule["threshold"], "margin_bits": rule["margin"],
            "none_weight_bits": rule["none_weight"], "prior_log2_odds": rule["prior_bits"], **flat,
            "by_nir_status": by}
