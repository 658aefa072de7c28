"""The link pipeline: signatures, register, deterministic pass, training, distributed scoring,
register deduplication, decisions. Every step is a batch of Dask tasks exchanging Parquet
files under a work directory (see _buckets.py), so memory per task stays bounded.

Layout of the work directory:
  signatures/part-<b>.parquet   distinct signatures, bucket b of the signature id
  register/part-<i>.parquet     the register's linkage columns
  deterministic/b=<b>/...       links of the deterministic pass, by signature bucket
  predictions/b=<b>/...         scored pairs of the probabilistic pass, by signature bucket
  register_edges/...            register pairs above the duplicate threshold
  links/part-<b>.parquet        one row per signature: person, method, probability, status
  model.json, register_model.json
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kernels import InputError, StageError

from ._buckets import key_hash, read_bucket, write_buckets
from ._clusters import connected_components
from ._model import ModelSpec
from ._prepare import LINK_COLUMNS, RECORD_INPUT_COLUMNS, records_table, register_table
from ._splink import train
from ._tasks import Progress, run_tasks, share

__all__ = ["LinkConfig", "build_signatures", "build_register", "deterministic_pass", "train_models",
           "score_rules", "dedupe_register", "decide", "SIGNATURE_SCHEMA", "LINK_SCHEMA", "STATUS", "METHODS"]

SOURCES = ("career", "resource")
SIGNATURE_SCHEMA = pa.schema([*LINK_COLUMNS, pa.field("rows", pa.int64(), nullable=False),
                              pa.field("sources", pa.int8(), nullable=False)])
CANDIDATE_SCHEMA = pa.schema([
    pa.field("signature", pa.int64(), nullable=False),
    pa.field("register_id", pa.int64(), nullable=False),
    pa.field("register_nir", pa.string(), nullable=False),
    pa.field("match_weight", pa.float64(), nullable=False),
    pa.field("match_probability", pa.float64(), nullable=False),
    pa.field("rule", pa.int16(), nullable=False),
])
STATUS = ("linked", "ambiguous", "unlinked")
METHODS = ("nir", "model")
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
])


class LinkConfig:
    """Sizes and thresholds of a link run (engine settings ``nirlink.linkage.*``)."""

    def __init__(self, *, signature_buckets: int = 8, rows_per_scoring_task: int = 200_000,
                 duckdb_threads: int = 1, duckdb_memory_limit: str | None = "2GB", prediction_floor: float = 0.01,
                 today_year: int = 2026):
        self.signature_buckets = signature_buckets
        self.rows_per_scoring_task = rows_per_scoring_task
        self.duckdb_threads = duckdb_threads
        self.duckdb_memory_limit = duckdb_memory_limit
        self.prediction_floor = prediction_floor
        self.today_year = today_year


# ------------------------------------------------------------------ signatures

def _sig_map(files: Sequence[str], source: int, work: str, n_buckets: int, part: str) -> dict[str, int]:
    rows = 0
    tables = []
    for f in files:
        t = pq.read_table(f, columns=RECORD_INPUT_COLUMNS, use_threads=False)
        rows += t.num_rows
        tables.append(records_table(t))
    if not tables:
        return {"rows": 0, "distinct": 0}
    rec = pa.concat_tables(tables)
    ids = rec.column("unique_id").to_numpy()
    uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
    local = rec.take(pa.array(first))
    local = local.append_column("rows", pa.array(counts.astype(np.int64)))
    local = local.append_column("sources", pa.array(np.full(len(uniq), 1 << source, np.int8)))
    h, valid = key_hash(local, ["unique_id"])
    write_buckets(local, h, valid, n_buckets, Path(work) / "tmp" / "signatures", part)
    return {"rows": rows, "distinct": len(uniq), "source": source}


def _sig_reduce(work: str, bucket: int) -> dict[str, Any]:
    t = read_bucket(Path(work) / "tmp" / "signatures", bucket, SIGNATURE_SCHEMA)
    if t.num_rows:
        ids = t.column("unique_id").to_numpy()
        order = np.argsort(ids, kind="stable")
        t = t.take(pa.array(order))
        ids = ids[order]
        starts = np.r_[0, np.flatnonzero(ids[1:] != ids[:-1]) + 1]
        rows = np.add.reduceat(t.column("rows").to_numpy(), starts)
        sources = np.bitwise_or.reduceat(t.column("sources").to_numpy(), starts)
        # a 64-bit collision would merge two different identities: detect it
        fields = pc.binary_join_element_wise(*[pc.cast(pc.fill_null(pc.cast(t.column(c), pa.string()), "\x00"), pa.string())
                                               for c in ("nir_body", "last_name_key", "first_names_norm", "birth_year",
                                                         "birth_month", "birth_day")], "\x1f")
        firsts = fields.take(pa.array(np.repeat(starts, np.diff(np.r_[starts, len(ids)]))))
        if not pc.all(pc.equal(fields, firsts)).as_py():
            raise StageError(f"signature ids: a 64-bit hash collision in bucket {bucket}; rerun is not enough, "
                             "report it (two different identities got the same id)")
        t = t.take(pa.array(starts)).set_column(SIGNATURE_SCHEMA.names.index("rows"), "rows", pa.array(rows))
        t = t.set_column(SIGNATURE_SCHEMA.names.index("sources"), "sources", pa.array(sources.astype(np.int8)))
    pq.write_table(t, Path(work) / "signatures" / f"part-{bucket:05d}.parquet", compression="zstd")
    src = t.column("sources").to_numpy() if t.num_rows else np.zeros(0, np.int8)
    return {"signatures": t.num_rows, **{f"signatures_{s}": int(((src >> i) & 1).sum()) for i, s in enumerate(SOURCES)}}


def build_signatures(rows: dict[str, Sequence[str]], work: Path, cfg: LinkConfig, *, client=None,
                     progress: Progress | None = None) -> dict[str, Any]:
    """Distinct signatures of the ingested rows of each source; counts rows and signatures per source."""
    (work / "signatures").mkdir(parents=True, exist_ok=True)
    args = []
    for s, source in enumerate(SOURCES):
        for i, f in enumerate(rows.get(source, [])):
            args.append(([f], s, str(work), cfg.signature_buckets, f"{source}-{i:05d}"))
    if not args:
        raise InputError("link: no career or resource rows to link")
    maps = run_tasks(client, _sig_map, args, name="signatures-map", progress=progress)
    reduces = run_tasks(client, _sig_reduce, [(str(work), b) for b in range(cfg.signature_buckets)],
                        name="signatures-reduce", progress=progress)
    shutil.rmtree(work / "tmp" / "signatures", ignore_errors=True)
    out: dict[str, Any] = {"signatures": sum(r["signatures"] for r in reduces)}
    for s, source in enumerate(SOURCES):
        out[f"rows_{source}"] = sum(m["rows"] for m in maps if m.get("source") == s)
        out[f"signatures_{source}"] = sum(r[f"signatures_{source}"] for r in reduces)
    out["rows"] = sum(out[f"rows_{s}"] for s in SOURCES)
    return out


# ------------------------------------------------------------------ register

def _reg_map(f: str, work: str, i: int) -> dict[str, int]:
    t = pq.read_table(f, use_threads=False)
    reg = register_table(t)
    pq.write_table(reg, Path(work) / "register" / f"part-{i:05d}.parquet", compression="zstd")
    kinds = Counter(t.column("nir_kind").to_pylist()) if "nir_kind" in t.column_names else {}
    return {"rows": reg.num_rows, **{f"kind_{k}": v for k, v in kinds.items()}}


def build_register(files: Sequence[str], work: Path, *, client=None, progress: Progress | None = None) -> dict:
    (work / "register").mkdir(parents=True, exist_ok=True)
    res = run_tasks(client, _reg_map, [(f, str(work), i) for i, f in enumerate(files)], name="register",
                    progress=progress)
    total = Counter()
    for r in res:
        total.update(r)
    return dict(total)


def register_files(work: Path) -> list[str]:
    return [str(p) for p in sorted((work / "register").glob("part-*.parquet"))]


def signature_files(work: Path) -> list[str]:
    return [str(p) for p in sorted((work / "signatures").glob("part-*.parquet"))]


# ------------------------------------------------------------------ deterministic pass

_DET_SQL = """
select s.unique_id as signature, r.unique_id as register_id, r.nir as register_nir
from s join r on r.nir = s.nir
where (
    (   (jaro_winkler_similarity(s.last_name_key, r.last_name_key) >= 0.85
         or jaro_winkler_similarity(s.last_name_key, coalesce(r.usage_name_key, '')) >= 0.85)
    and (jaro_winkler_similarity(s.first_name_key, r.first_name_key) >= 0.85
         or list_contains(string_split(r.first_names_norm, ' '), s.first_name_norm)))
    or (s.last_name_key = r.first_name_key and s.first_name_key in (r.last_name_key, r.usage_name_key))
  )
  and (s.birth_year is null or r.birth_year is null
       or (s.birth_year = r.birth_year and (s.birth_month is null or r.birth_month is null
                                            or s.birth_month = r.birth_month or s.birth_month = r.birth_day))
       or (abs(s.birth_year - r.birth_year) = 1 and s.birth_month = r.birth_month and s.birth_day = r.birth_day))
"""
DETERMINISTIC_RULE = ("valid NIR present in the register, last name (or usage name) and first name similar "
                      "(Jaro-Winkler >= 0.85, or the two swapped), birth year equal (or one year off with the same "
                      "day and month) and month equal or swapped with the day, unknown parts never contradicting")


def _det_map(f: str, side: str, work: str, n_buckets: int, part: str) -> int:
    t = pq.read_table(f, use_threads=False)
    if side == "left":
        t = t.filter(pc.is_valid(t.column("nir")))
    h, valid = key_hash(t, ["nir"])
    write_buckets(t, h, valid, n_buckets, Path(work) / "tmp" / "det" / side, part)
    return t.num_rows


def _det_reduce(work: str, bucket: int, sig_buckets: int, cfg_threads: int, memory_limit: str | None) -> int:
    from ._splink import duckdb_connection

    s = read_bucket(Path(work) / "tmp" / "det" / "left", bucket, SIGNATURE_SCHEMA)
    r = read_bucket(Path(work) / "tmp" / "det" / "right", bucket, LINK_COLUMNS)
    if s.num_rows == 0 or r.num_rows == 0:
        return 0
    with duckdb_connection(threads=cfg_threads, memory_limit=memory_limit) as con:
        con.register("s", s)
        con.register("r", r)
        links = con.sql(_DET_SQL).to_arrow_table()
    links = links.append_column("match_weight", pa.array(np.full(links.num_rows, np.inf)))
    links = links.append_column("match_probability", pa.array(np.ones(links.num_rows)))
    links = links.append_column("rule", pa.array(np.full(links.num_rows, -1, np.int16)))
    links = links.cast(CANDIDATE_SCHEMA)
    h, valid = key_hash(links, ["signature"])
    write_buckets(links, h, valid, sig_buckets, Path(work) / "deterministic", f"det-{bucket:05d}")
    return links.num_rows


def deterministic_pass(work: Path, cfg: LinkConfig, *, client=None, progress: Progress | None = None) -> dict:
    sig_files, reg_files = signature_files(work), register_files(work)
    n = max(1, cfg.signature_buckets)
    args = [(f, "left", str(work), n, f"s{i:05d}") for i, f in enumerate(sig_files)] + \
           [(f, "right", str(work), n, f"r{i:05d}") for i, f in enumerate(reg_files)]
    run_tasks(client, _det_map, args, name="deterministic-map", progress=progress)
    links = run_tasks(client, _det_reduce, [(str(work), b, cfg.signature_buckets, cfg.duckdb_threads,
                                             cfg.duckdb_memory_limit) for b in range(n)],
                      name="deterministic-join", progress=progress)
    shutil.rmtree(work / "tmp" / "det", ignore_errors=True)
    return {"linked_signatures": sum(links), "rule": DETERMINISTIC_RULE}


# ------------------------------------------------------------------ training

def _year_counts(f: str) -> dict[int, int]:
    t = pq.read_table(f, columns=["birth_year"], use_threads=False)
    vc = pc.value_counts(pc.drop_null(t.column("birth_year")))
    return {int(v): int(c) for v, c in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())}


def _take_years(f: str, years: list[int], columns: list[str] | None = None) -> pa.Table:
    t = pq.read_table(f, use_threads=False)
    t = t.filter(pc.fill_null(pc.is_in(t.column("birth_year"), value_set=pa.array(years, pa.int16())), False))
    return t.select(LINK_COLUMNS.names)


def _tf_counts(f: str, columns: list[str]) -> dict[str, pa.Table]:
    t = pq.read_table(f, columns=columns, use_threads=False)
    out = {}
    for c in columns:
        vc = pc.value_counts(pc.drop_null(t.column(c)))
        out[c] = pa.table({"value": vc.field("values"), "n": vc.field("counts")})
    return out


def _global_tf(model: ModelSpec, reg_files: list[str], client, progress) -> dict[str, pa.Table]:
    cols = model.tf_columns()
    if not cols:
        return {}
    parts = run_tasks(client, _tf_counts, [(f, cols) for f in reg_files], name=f"tf-{model.name}", progress=progress)
    import duckdb

    out = {}
    for c in cols:
        merged = pa.concat_tables([p[c] for p in parts])
        con = duckdb.connect()
        con.register("m", merged)
        counts = con.sql("select value, sum(n)::double as n from m group by value order by value").to_arrow_table()
        con.close()
        total = float(pc.sum(counts.column("n")).as_py() or 1.0)
        out[c] = pa.table({c: counts.column("value"), f"tf_{c}": pc.divide(counts.column("n"), total)})
    return out


def _pick_years(counts: dict[int, int], max_rows: int, seed: int) -> list[int]:
    years = sorted(counts)
    rng = np.random.default_rng(seed)
    rng.shuffle(years)
    chosen, total = [], 0
    for y in years:
        if chosen and total + counts[y] > max_rows:
            continue
        chosen.append(y)
        total += counts[y]
    return sorted(chosen)


def _train_task(model: ModelSpec, left: pa.Table, right: pa.Table | None, tf, threads, memory_limit, full_sizes):
    return train(model, left, right, tf, threads=threads, memory_limit=memory_limit, full_sizes=full_sizes)


def train_models(work: Path, models: dict[str, ModelSpec], cfg: LinkConfig, *, client=None,
                 progress: Progress | None = None) -> dict[str, Any]:
    """Train untrained models on a bounded sample: all records and register rows of a random set
    of birth years (matches share their birth year, so a year subset keeps them together)."""
    reg_files, sig_files = register_files(work), signature_files(work)
    info: dict[str, Any] = {}
    tf_all = {name: _global_tf(m, reg_files, client, progress) for name, m in models.items()}
    for name, model in models.items():
        if model.trained:
            info[name] = {"trained": "given"}
            continue
        counts = Counter()
        for c in run_tasks(client, _year_counts, [(f,) for f in reg_files], name=f"sample-{name}", progress=progress):
            counts.update(c)
        max_rows = int(model.training.get("sample_max_register_rows", 300_000))
        years = _pick_years(counts, max_rows, int(model.training.get("seed", 42)))
        right = pa.concat_tables(run_tasks(client, _take_years, [(f, years) for f in reg_files], name=f"sample-r-{name}"))
        n_right_full = sum(counts.values())
        if model.link_type == "link_only":
            left_parts = run_tasks(client, _take_years, [(f, years) for f in sig_files], name=f"sample-l-{name}")
            left = pa.concat_tables(left_parts)
            n_left_full = sum(pq.read_metadata(f).num_rows for f in sig_files)
            full = (n_left_full, n_right_full) if len(years) < len(counts) else None
            args = (model, left, right, tf_all[name], cfg.duckdb_threads, cfg.duckdb_memory_limit, full)
        else:
            full = (n_right_full, n_right_full) if len(years) < len(counts) else None
            left = right
            args = (model, right, None, tf_all[name], cfg.duckdb_threads, cfg.duckdb_memory_limit, full)
        settings = run_tasks(client, _train_task, [tuple(share(client, a) if isinstance(a, pa.Table) else a
                                                         for a in args)], name=f"train-{name}", progress=progress)[0]
        model.splink = settings
        info[name] = {"sample_years": years, "sample_left_rows": left.num_rows, "sample_right_rows": right.num_rows,
                      "probability_two_random_records_match": settings["probability_two_random_records_match"]}
    return {"training": info, "tf": tf_all}


# ------------------------------------------------------------------ probabilistic pass

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
    pred = predict_rules(model, rules, left, right, tf, threads=cfg.duckdb_threads,
                         memory_limit=cfg.duckdb_memory_limit, threshold=cfg.prediction_floor)
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


# ------------------------------------------------------------------ register deduplication

def _edges(f: str, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    t = pq.read_table(f)
    t = t.filter(pc.greater_equal(t.column("match_probability"), threshold))
    return t.column("unique_id_l").to_numpy(), t.column("unique_id_r").to_numpy()


def _cluster_rows(f: str, components: tuple[np.ndarray, np.ndarray]) -> pa.Table:
    nodes, comps = components
    t = pq.read_table(f, columns=["unique_id", "nir", "nir_status", "birth_year", "birth_month"])
    ids = t.column("unique_id").to_numpy()
    inside = np.isin(ids, nodes)
    t = t.filter(pa.array(inside))
    comp = comps[np.searchsorted(nodes, t.column("unique_id").to_numpy())] if t.num_rows else np.zeros(0, np.int64)
    return t.append_column("cluster", pa.array(comp.astype(np.int64)))


def dedupe_register(work: Path, model: ModelSpec, tf, cfg: LinkConfig, *, client=None,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Pairs of register rows above the model's threshold, clustered into persons. Writes
    ``clusters.parquet``: every register row in a cluster of two or more, its cluster id (the
    smallest unique_id of the cluster) and the cluster's canonical NIR (the smallest permanent
    NIR, else the smallest NIR)."""
    scored = score_rules(work, model, tf, cfg, left_files=register_files(work), right_files=None,
                         out=work / "register_edges", schema=LINK_COLUMNS, client=client, progress=progress)
    threshold = float(model.decision.get("threshold", 0.95))
    edge_files = sorted(str(p) for p in (work / "register_edges").glob("*.parquet"))
    parts = run_tasks(client, _edges, [(f, threshold) for f in edge_files], name="register-edges", progress=progress)
    nodes, comps = connected_components(parts, client=client)
    shared = share(client, (nodes, comps))
    members = pa.concat_tables(run_tasks(client, _cluster_rows, [(f, shared) for f in register_files(work)],
                                         name="register-clusters", progress=progress)) if len(nodes) else None
    if members is None or members.num_rows == 0:
        clusters = pa.table({"unique_id": pa.array([], pa.int64()), "cluster": pa.array([], pa.int64()),
                             "person": pa.array([], pa.string()), "birth_year": pa.array([], pa.int16()),
                             "birth_month": pa.array([], pa.int8())})
    else:
        import duckdb

        con = duckdb.connect()
        con.register("m", members)
        clusters = con.sql("""
            with canon as (
              select cluster, min(case when nir_status = 'valid' then nir end) as perm, min(nir) as any_nir
              from m group by cluster)
            select m.unique_id, m.cluster, coalesce(c.perm, c.any_nir) as person,
                   first(m2.birth_year) as birth_year, first(m2.birth_month) as birth_month
            from m join canon c using (cluster)
            join m m2 on m2.cluster = m.cluster and m2.nir = coalesce(c.perm, c.any_nir)
            group by m.unique_id, m.cluster, coalesce(c.perm, c.any_nir)
            order by m.unique_id""").to_arrow_table()
        con.close()
    pq.write_table(clusters, work / "clusters.parquet")
    return {**scored, "threshold": threshold, "rows_in_clusters": clusters.num_rows,
            "clusters": len(np.unique(clusters.column("cluster").to_numpy())) if clusters.num_rows else 0}


# ------------------------------------------------------------------ decisions

_DECIDE_SQL = """
with cand as (
  select c.signature, coalesce(k.person, c.register_nir) as person, c.register_nir, c.match_probability,
         c.match_weight, case when c.rule < 0 then 'nir' else 'model' end as method
  from c left join k on k.unique_id = c.register_id),
per_person as (
  select signature, person, max(match_probability) as p, max(match_weight) as w,
         arg_max(register_nir, match_probability) as register_nir, arg_max(method, match_probability) as method
  from cand group by signature, person),
ranked as (
  select *, row_number() over (partition by signature order by p desc, w desc, person) as rk,
         count(*) over (partition by signature) as n
  from per_person),
best as (
  select b.signature, b.person, b.register_nir, b.method, b.p, b.w, b.n, s.p as p2, s.w as w2
  from ranked b left join ranked s on s.signature = b.signature and s.rk = 2
  where b.rk = 1)
select g.unique_id as signature,
       case when status = 'linked' then x.person end as person,
       case when status = 'linked' then x.register_nir end as register_nir,
       x.method, x.p as match_probability, x.w as match_weight, x.p2 as runner_up_probability,
       coalesce(x.n, 0)::int as candidates, coalesce(x.status, 'unlinked') as status, g.nir_status, g.rows
from g left join (
  select *, case
    when p >= {threshold} and (p2 is null or w - w2 >= {margin} or method = 'nir') then 'linked'
    when p >= {threshold} then 'ambiguous'
    else 'unlinked' end as status
  from best) x on x.signature = g.unique_id
"""


def _decide_bucket(work: str, bucket: int, clusters: pa.Table, threshold: float, margin: float) -> dict[str, int]:
    import duckdb

    w = Path(work)
    sig = pq.read_table(w / "signatures" / f"part-{bucket:05d}.parquet", columns=["unique_id", "nir_status", "rows"])
    cands = pa.concat_tables([read_bucket(w / "deterministic", bucket, CANDIDATE_SCHEMA),
                              read_bucket(w / "predictions", bucket, CANDIDATE_SCHEMA)])
    con = duckdb.connect()
    con.execute("SET threads = 1")
    con.register("g", sig)
    con.register("c", cands)
    con.register("k", clusters)
    links = con.sql(_DECIDE_SQL.format(threshold=threshold, margin=margin)).to_arrow_table()
    con.close()
    links = links.sort_by("signature").select(LINK_SCHEMA.names).cast(LINK_SCHEMA)
    pq.write_table(links, w / "links" / f"part-{bucket:05d}.parquet", compression="zstd")
    st = links.column("status").to_numpy(zero_copy_only=False)
    meth = pc.fill_null(links.column("method"), "").to_numpy(zero_copy_only=False)
    rows = links.column("rows").to_numpy()
    out = {}
    for s in STATUS:
        out[f"signatures_{s}"] = int((st == s).sum())
        out[f"rows_{s}"] = int(rows[st == s].sum())
    for m in METHODS:
        out[f"linked_by_{m}"] = int(((st == "linked") & (meth == m)).sum())
    ns = pc.fill_null(links.column("nir_status"), "unknown").to_numpy(zero_copy_only=False)
    for status in np.unique(ns):
        sel = ns == status
        out[f"by_nir_status.{status}.linked_nir"] = int((sel & (st == "linked") & (meth == "nir")).sum())
        out[f"by_nir_status.{status}.linked_model"] = int((sel & (st == "linked") & (meth == "model")).sum())
        out[f"by_nir_status.{status}.ambiguous"] = int((sel & (st == "ambiguous")).sum())
        out[f"by_nir_status.{status}.unlinked"] = int((sel & (st == "unlinked")).sum())
    return out


def decide(work: Path, model: ModelSpec, cfg: LinkConfig, *, client=None, progress: Progress | None = None) -> dict:
    """Per signature: the best person (register clusters merged), its probability, the runner-up, the status."""
    (work / "links").mkdir(parents=True, exist_ok=True)
    clusters = pq.read_table(work / "clusters.parquet") if (work / "clusters.parquet").exists() else \
        pa.table({"unique_id": pa.array([], pa.int64()), "person": pa.array([], pa.string())})
    clusters = clusters.select(["unique_id", "person"])
    threshold = float(model.decision.get("threshold", 0.9))
    margin = float(model.decision.get("margin", 5.0))
    shared = share(client, clusters)
    res = run_tasks(client, _decide_bucket, [(str(work), b, shared, threshold, margin)
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
    return {"threshold": threshold, "margin_bits": margin, **flat, "by_nir_status": by}
