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

from nirlink.kernels._segments import sorted_unique

from ._buckets import is_in_sorted, key_hash, read_bucket, write_buckets
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

def _unlinked_signatures(f: str, work: str, columns: list[str] | None = None) -> pa.Table:
    """Signatures of part ``f`` with no deterministic link (same bucket numbering); ``columns``:
    only those read."""
    t = pq.read_table(f, columns=columns, use_threads=False)
    bucket = int(Path(f).stem.split("-")[1])
    det = read_bucket(Path(work) / "deterministic", bucket, CANDIDATE_SCHEMA)
    if det.num_rows:
        linked = pa.array(sorted_unique(det.column("signature").to_numpy()))
        t = t.filter(pc.invert(pc.is_in(t.column("unique_id"), value_set=linked)))
    return t


def _linked_count(work: Path, left_files: list[str]) -> int:
    """Signatures of ``left_files`` the deterministic pass linked (``work/deterministic``): an
    increment scores a few of the job's signatures, most of the others linked."""
    files = sorted((Path(work) / "deterministic").rglob("*.parquet"))
    if not files:
        return 0
    sig = pa.concat_arrays([c for f in files for c in pq.read_table(f, columns=["signature"]).column(0).chunks])
    left = pa.concat_arrays([c for f in left_files for c in pq.read_table(f, columns=["unique_id"]).column(0).chunks])
    return int(is_in_sorted(left.to_numpy(), sorted_unique(sig.to_numpy())).sum())


def _used_columns(model: ModelSpec, schema: pa.Schema, extra: set[str]) -> pa.Schema:
    """The fields of ``schema`` that the model's settings (comparisons, term frequencies) or
    blocking rules name, as whole identifiers, with ``unique_id``, the fallback rules' columns
    and ``extra``: what scoring's buckets carry. The register model compares 9 of the 16 link
    columns (not the NIR's three): its deduplication moved every register row twice with all
    of them."""
    import json
    import re

    text = json.dumps(model.settings()) + " ".join(b.sql for b in model.blocking)
    named = set()
    for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text):  # a column as Splink names it: x, x_l, x_r, tf_x_l
        named |= {word, re.sub(r"_[lr]$", "", word), re.sub(r"^tf_", "", re.sub(r"_[lr]$", "", word))}
    keep = {"unique_id", *extra, *(c for cols in fallback_columns(model) for c in cols)}
    return pa.schema([f for f in schema if f.name in named or f.name in keep])


def partition_groups(model: ModelSpec) -> list[tuple[str, str, list[int]]]:
    """Blocking rules grouped by the first key of each side: every rule of a group implies
    l.<left key> = r.<right key>, so partitioning both sides on that one key brings together
    every pair any rule of the group admits - and one Splink call scores the whole group.
    Fallback rules (``Blocking.fallback``) are grouped apart, by their columns: their group's
    left side holds only the rows without an equal right row."""
    groups: dict[tuple[str, str, tuple[str, ...]], list[int]] = {}
    for i, rule in enumerate(model.blocking):
        groups.setdefault((rule.left_keys[0], rule.right_keys[0], rule.fallback), []).append(i)
    return [(lk, rk, rules) for (lk, rk, _), rules in groups.items()]


def fallback_columns(model: ModelSpec) -> list[tuple[str, ...]]:
    """The distinct column sets of the model's fallback rules."""
    return list(dict.fromkeys(b.fallback for b in model.blocking if b.fallback))


def _twin_keys(f: str, sets: list[tuple[str, ...]]) -> list[np.ndarray]:
    """Per column set, the key hashes of the rows of ``f`` (a right side's file) with no null among them."""
    t = pq.read_table(f, columns=sorted({c for cols in sets for c in cols}), use_threads=False)
    out = []
    for cols in sets:
        h, valid = key_hash(t, list(cols))
        out.append(sorted_unique(h[valid]))
    return out


def twin_keys(model: ModelSpec, files: list[str], *, client=None, progress: Progress | None = None,
              ) -> dict[tuple[str, ...], np.ndarray]:
    """For each column set of the model's fallback rules, the key hashes of the right side's
    rows (``files``): a left row whose hash is among them has an equal right row."""
    sets = fallback_columns(model)
    if not sets or not files:
        return {cols: np.zeros(0, np.int64) for cols in sets}
    parts = run_tasks(client, _twin_keys, [(f, sets) for f in files], name=f"score-twins-{model.name}",
                      progress=progress)
    return {cols: sorted_unique(np.concatenate([p[i] for p in parts])) for i, cols in enumerate(sets)}


def without_twin(t: pa.Table, cols: tuple[str, ...], twins: np.ndarray) -> np.ndarray:
    """Rows of ``t`` no right row equals on ``cols`` (a null among them: none does)."""
    h, valid = key_hash(t, list(cols))
    return ~(valid & is_in_sorted(h, twins))


def _score_map_right(f: str, tmp: str, groups, buckets: int, keys, part: str, side: str, columns: list[str]) -> int:
    """Write one side's rows into every group's buckets; with ``keys``, only rows whose key some
    left row carries (the right side of a link: most register rows meet no record), written
    once per right key (``right_partitions``: the groups of one right key share its buckets)."""
    t = pq.read_table(f, columns=columns, use_threads=False).select(columns)
    written = 0
    if side == "right":
        for r, (rk, _) in enumerate(right_partitions(groups)):
            h, valid = key_hash(t, [rk])
            valid &= is_in_sorted(h, keys[r])
            write_buckets(t, h, valid, buckets, Path(tmp) / f"right={r}", part, scratch=True)
            written += int(valid.sum())
        return written
    for g, (lk, _, _) in enumerate(groups):
        h, valid = key_hash(t, [lk])
        write_buckets(t, h, valid, buckets, Path(tmp) / f"group={g}" / side, part, scratch=True)
        written += int(valid.sum())
    return written


def right_partitions(groups) -> list[tuple[str, list[int]]]:
    """The groups' right keys, each with the groups partitioned on it: a key's right rows are
    written once for all its groups (a group of fallback rules and the group of ordinary
    rules on the same keys: 1.9 -> 2.7 s of the right side's writes at 200,000 persons when
    each group wrote its own)."""
    out: dict[str, list[int]] = {}
    for g, (_, rk, _) in enumerate(groups):
        out.setdefault(rk, []).append(g)
    return list(out.items())


def _score_map_left(f: str, tmp: str, groups, buckets: int, part: str, columns: list[str],
                    work: str | None, fallback=None, twins=None) -> list[np.ndarray]:
    """Left side of a link: rows written once per partition group into its buckets (for the
    identity pipeline, only signatures the deterministic pass left; for a group of fallback
    rules, ``fallback[g]`` its columns, only rows without an equal right row: ``twins``);
    returns each group's key hashes, to filter the right side."""
    t = (_unlinked_signatures(f, work, columns) if work else pq.read_table(f, columns=columns, use_threads=False)
         ).select(columns)
    keys = []
    alone: dict[tuple[str, ...], np.ndarray] = {}  # per fallback column set, once per file
    for g, (lk, _, _) in enumerate(groups):
        h, valid = key_hash(t, [lk])
        if fallback and fallback[g]:
            if fallback[g] not in alone:
                alone[fallback[g]] = without_twin(t, fallback[g], twins[fallback[g]])
            valid &= alone[fallback[g]]
        write_buckets(t, h, valid, buckets, Path(tmp) / f"group={g}" / "left", part, scratch=True)
        keys.append(sorted_unique(h[valid]))
    return keys


def _score_reduce(tmp: str, model: ModelSpec, group: int, rules: list[int], bucket: int, tf, cfg: LinkConfig,
                  dedupe: bool, out: str, sig_buckets: int | None, schema: pa.Schema,
                  right_part: int = 0, part_prefix: str = "") -> dict[int, int]:
    from ._splink import predict_rules

    base = Path(tmp) / f"group={group}"
    left = read_bucket(base / "left", bucket, schema)
    right = None if dedupe else read_bucket(Path(tmp) / f"right={right_part}", bucket, schema)
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
    name = f"{part_prefix}group{group:02d}-b{bucket:05d}"
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
                exclude_linked: bool = False, linked: int | None = None, candidates: bool = False, client=None,
                progress: Progress | None = None, twins_in: list[str] | None = None,
                part_prefix: str = "") -> dict[str, Any]:
    """Score every blocking rule across the cluster: both sides partitioned on each rule
    group's key, one Splink call per (group, bucket), pairs of earlier rules excluded.
    ``right_files=None`` scores pairs within the left files (deduplication); ``part_prefix``
    starts the names of the files written (an increment tells its own from the carried ones). Fallback rules
    score the left rows no row of ``twins_in`` (default: the right files) equals on their
    columns: an increment scores against the register's changed entries only, its records'
    twins are looked for in the whole register. ``exclude_linked``: the left signatures the
    deterministic pass linked are not scored; ``linked``: how many of the left files' they are,
    when the caller knows (the deterministic pass's distinct signatures, when the left files
    are every signature), else counted here from ``work/deterministic``."""
    dedupe = right_files is None
    schema = _used_columns(model, schema or pq.read_schema(left_files[0]), {"nir"} if candidates else set())
    columns = schema.names
    groups = partition_groups(model)
    fallback = [model.blocking[rules[0]].fallback for _, _, rules in groups]
    twins = None
    if any(fallback):
        if dedupe:
            from nirlink.kernels import ModelError

            raise ModelError(f"model {model.name!r}: fallback rules need a right side (a link_only model)")
        twins = share(client, twin_keys(model, twins_in if twins_in is not None else right_files, client=client,
                                        progress=progress))
    tmp = work / "tmp" / f"score-{model.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    n_left = sum(pq.read_metadata(f).num_rows for f in left_files)
    if exclude_linked:
        # the records scored: those the deterministic pass left (a fifth of the signatures at
        # 200,000 persons); counting them all made tasks of a fifth of the intended size, each
        # paying Splink's fixed cost (32 tasks for 140,682 records at 200,000 persons)
        n_left -= linked if linked is not None else _linked_count(work, left_files)
    buckets = max(1, -(-n_left // cfg.rows_per_scoring_task))
    if dedupe:
        run_tasks(client, _score_map_right, [(f, str(tmp), groups, buckets, None, f"l{i:05d}", "left", columns)
                                             for i, f in enumerate(left_files)], name=f"score-map-{model.name}",
                  progress=progress)
    else:
        keys = run_tasks(client, _score_map_left, [(f, str(tmp), groups, buckets, f"l{i:05d}", columns,
                                                    str(work) if exclude_linked else None, fallback, twins)
                                                   for i, f in enumerate(left_files)],
                         name=f"score-map-left-{model.name}", progress=progress)
        # per right key, the keys some left row of one of its groups carries
        right_keys = [sorted_unique(np.concatenate([k[g] for k in keys for g in gs])) if keys else np.zeros(0, np.int64)
                      for _, gs in right_partitions(groups)]
        shared_keys = share(client, right_keys)
        run_tasks(client, _score_map_right, [(f, str(tmp), groups, buckets, shared_keys, f"r{i:05d}", "right",
                                              columns) for i, f in enumerate(right_files)],
                  name=f"score-map-right-{model.name}", progress=progress)
    tf_arg = share(client, tf)
    right_of = {g: r for r, (_, gs) in enumerate(right_partitions(groups)) for g in gs}
    args = [(str(tmp), model, g, rules, b, tf_arg, cfg, dedupe, str(out),
             cfg.signature_buckets if candidates else None, schema, right_of[g], part_prefix)
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


