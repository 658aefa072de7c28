"""Phase 5 of the link stage: distributed scoring. Both sides are partitioned on each
blocking-rule group's key, one Splink call scores a (group, bucket), and the pairs of earlier
rules are excluded; for the identity pipeline the scored pairs become candidates keyed by
signature."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._buckets import key_hash, read_bucket, write_buckets
from ._config import LinkConfig
from ._model import ModelSpec, evidence_floor_probability
from ._tasks import Progress, run_tasks, share

__all__ = ["CANDIDATE_SCHEMA", "partition_groups", "score_rules"]

CANDIDATE_SCHEMA = pa.schema([
    pa.field("signature", pa.int64(), nullable=False),
    pa.field("register_id", pa.int64(), nullable=False),
    pa.field("register_nir", pa.string(), nullable=False),
    pa.field("match_weight", pa.float64(), nullable=False),
    pa.field("match_probability", pa.float64(), nullable=False),
    pa.field("rule", pa.int16(), nullable=False),
])

def _unlinked_signatures(f: str, work: str) -> pa.Table:
    """Signatures of part ``f`` with no deterministic link (same bucket numbering)."""
    t = pq.read_table(f, use_threads=False)
    bucket = int(Path(f).stem.split("-")[1])
    det = read_bucket(Path(work) / "deterministic", bucket, CANDIDATE_SCHEMA)
    if det.num_rows:
        linked = pa.array(np.unique(det.column("signature").to_numpy()))
        t = t.filter(pc.invert(pc.is_in(t.column("unique_id"), value_set=linked)))
    return t


def partition_groups(model: ModelSpec) -> list[tuple[str, str, list[int]]]:
    """Blocking rules grouped by the first key of each side: every rule of a group implies
    l.<left key> = r.<right key>, so partitioning both sides on that one key brings together
    every pair any rule of the group admits - and one Splink call scores the whole group."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, rule in enumerate(model.blocking):
        groups.setdefault((rule.left_keys[0], rule.right_keys[0]), []).append(i)
    return [(lk, rk, rules) for (lk, rk), rules in groups.items()]


def _score_map_right(f: str, tmp: str, groups, buckets: int, keys, part: str, side: str, columns: list[str]) -> int:
    """Write one side's rows into every group's buckets; with ``keys``, only rows whose key some
    left row carries (the right side of a link: most register rows meet no record)."""
    t = pq.read_table(f, use_threads=False).select(columns)
    written = 0
    for g, (lk, rk, _) in enumerate(groups):
        h, valid = key_hash(t, [lk if side == "left" else rk])
        if keys is not None:
            valid &= np.isin(h, keys[g])
        write_buckets(t, h, valid, buckets, Path(tmp) / f"group={g}" / side, part)
        written += int(valid.sum())
    return written


def _score_map_left(f: str, tmp: str, groups, buckets: int, part: str, columns: list[str],
                    work: str | None) -> list[np.ndarray]:
    """Left side of a link: rows written once per partition group into its buckets (for the
    identity pipeline, only signatures the deterministic pass left); returns each group's key
    hashes, to filter the right side."""
    t = (_unlinked_signatures(f, work) if work else pq.read_table(f, use_threads=False)).select(columns)
    keys = []
    for g, (lk, _, _) in enumerate(groups):
        h, valid = key_hash(t, [lk])
        write_buckets(t, h, valid, buckets, Path(tmp) / f"group={g}" / "left", part)
        keys.append(np.unique(h[valid]))
    return keys


def _score_reduce(tmp: str, model: ModelSpec, group: int, rules: list[int], bucket: int, tf, cfg: LinkConfig,
                  dedupe: bool, out: str, sig_buckets: int | None, schema: pa.Schema) -> dict[int, int]:
    from ._splink import predict_rules

    base = Path(tmp) / f"group={group}"
    left = read_bucket(base / "left", bucket, schema)
    right = None if dedupe else read_bucket(base / "right", bucket, schema)
    if left.num_rows == 0 or (right is not None and right.num_rows == 0):
        return {}
    floor = cfg.prediction_floor
    if sig_buckets is not None and cfg.evidence_floor is not None:  # identity candidates: a floor on evidence
        floor = evidence_floor_probability(model, cfg.evidence_floor)
    pred = predict_rules(model, rules, left, right, tf, threads=cfg.duckdb_threads,
                         memory_limit=cfg.duckdb_memory_limit, threshold=floor)
    per_rule = Counter(pred.column("rule").to_pylist())
    if pred.num_rows == 0:
        return {}
    name = f"group{group:02d}-b{bucket:05d}"
    if sig_buckets is None:  # plain scored pairs
        Path(out).mkdir(parents=True, exist_ok=True)
        pq.write_table(pred, Path(out) / f"{name}.parquet")
        return dict(per_rule)
    # identity pipeline: candidates keyed by signature, with the register NIR
    pos = pc.index_in(pred.column("unique_id_r"), value_set=right.column("unique_id"))
    cand = pa.table({
        "signature": pred.column("unique_id_l"), "register_id": pred.column("unique_id_r"),
        "register_nir": pc.take(right.column("nir"), pos), "match_weight": pred.column("match_weight"),
        "match_probability": pred.column("match_probability"), "rule": pred.column("rule"),
    }, schema=CANDIDATE_SCHEMA)
    h, valid = key_hash(cand, ["signature"])
    write_buckets(cand, h, valid, sig_buckets, out, name)
    return dict(per_rule)


def score_rules(work: Path, model: ModelSpec, tf: dict[str, pa.Table], cfg: LinkConfig, *, left_files: list[str],
                right_files: list[str] | None, out: Path, schema: pa.Schema | None = None,
                exclude_linked: bool = False, candidates: bool = False, client=None,
                progress: Progress | None = None) -> dict[str, Any]:
    """Score every blocking rule across the cluster: both sides partitioned on each rule
    group's key, one Splink call per (group, bucket), pairs of earlier rules excluded.
    ``right_files=None`` scores pairs within the left files (deduplication)."""
    dedupe = right_files is None
    schema = schema or pq.read_schema(left_files[0])
    columns = schema.names
    groups = partition_groups(model)
    tmp = work / "tmp" / f"score-{model.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    n_left = sum(pq.read_metadata(f).num_rows for f in left_files)
    buckets = max(1, -(-n_left // cfg.rows_per_scoring_task))
    if dedupe:
        run_tasks(client, _score_map_right, [(f, str(tmp), groups, buckets, None, f"l{i:05d}", "left", columns)
                                             for i, f in enumerate(left_files)], name=f"score-map-{model.name}",
                  progress=progress)
    else:
        keys = run_tasks(client, _score_map_left, [(f, str(tmp), groups, buckets, f"l{i:05d}", columns,
                                                    str(work) if exclude_linked else None)
                                                   for i, f in enumerate(left_files)],
                         name=f"score-map-left-{model.name}", progress=progress)
        group_keys = [np.unique(np.concatenate([k[g] for k in keys])) if keys else np.zeros(0, np.int64)
                      for g in range(len(groups))]
        shared_keys = share(client, group_keys)
        run_tasks(client, _score_map_right, [(f, str(tmp), groups, buckets, shared_keys, f"r{i:05d}", "right",
                                              columns) for i, f in enumerate(right_files)],
                  name=f"score-map-right-{model.name}", progress=progress)
    tf_arg = share(client, tf)
    args = [(str(tmp), model, g, rules, b, tf_arg, cfg, dedupe, str(out),
             cfg.signature_buckets if candidates else None, schema)
            for g, (_, _, rules) in enumerate(groups) for b in range(buckets)
            if (tmp / f"group={g}" / "left" / f"b={b:05d}").exists()]
    counts = run_tasks(client, _score_reduce, args, name=f"score-{model.name}", progress=progress)
    per_rule = Counter()
    for c in counts:
        per_rule.update(c)
    shutil.rmtree(tmp, ignore_errors=True)
    return {"tasks": len(args), "pairs": sum(per_rule.values()),
            "pairs_per_rule": {model.blocking[r].name: per_rule[r] for r in range(len(model.blocking))},
            "partition_groups": [[model.blocking[r].name for r in rules] for _, _, rules in groups],
            "buckets_per_group": buckets}


