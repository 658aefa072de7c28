"""The general front: any model file, one dataset (deduplication) or two (link), CSV or Parquet.

Inputs need a unique id column (int64, or any column hashed to int64) and the columns the
model compares. An untrained model is trained first (on a bounded random sample, or on the
years of `training.sample_column` when the data has it). Outputs: scored pairs, clusters
(connected components of pairs above the threshold), the trained model and its charts.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from nirlink.kernels import InputError, InputFileError, ModelError
from nirlink.kernels._hash import hash_rows

from ._clusters import connected_components
from ._config import LinkConfig
from ._model import ModelSpec, save_model
from ._scoring import score_rules
from ._splink import tf_tables, train
from ._tasks import Progress

__all__ = ["link_datasets", "read_dataset", "train_on", "save_charts"]


def read_dataset(path: str | Path, *, id_column: str = "unique_id") -> pa.Table:
    """A CSV or Parquet dataset as an Arrow table with an int64 ``unique_id``."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: no such file or directory")
    try:
        if path.is_file() and path.suffix.lower() in (".csv", ".txt"):
            table = pacsv.read_csv(path)
        else:
            table = ds.dataset(str(path), format="parquet").to_table()
    except Exception as exc:  # noqa: BLE001
        raise InputFileError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
    if id_column not in table.column_names:
        raise InputError(f"{path}: no id column {id_column!r} (columns: {', '.join(table.column_names[:20])})")
    ids = table.column(id_column)
    if not pa.types.is_integer(ids.type):
        ids = pa.array(hash_rows(pc.cast(ids, pa.string())))
    else:
        ids = pc.cast(ids, pa.int64())
    if pc.count_distinct(ids).as_py() != table.num_rows:
        raise InputError(f"{path}: column {id_column!r} is not unique")
    table = table.drop_columns([c for c in ("unique_id",) if c in table.column_names and c != id_column] +
                               ([id_column] if id_column != "unique_id" else []))
    if "unique_id" in table.column_names:
        table = table.drop_columns(["unique_id"])
    return table.add_column(0, "unique_id", ids)


def _check_columns(model: ModelSpec, table: pa.Table, what: str) -> None:
    import re

    wanted = set()
    for c in model.comparisons:
        for lv in c.levels:
            wanted.update(re.findall(r"\b[lr]\.([A-Za-z_][A-Za-z0-9_]*)", lv.sql))
    for b in model.blocking:
        wanted.update(b.left_keys)
        wanted.update(b.right_keys)
    missing = sorted(wanted - set(table.column_names))
    if missing:
        raise InputError(f"{what}: the model compares column(s) {', '.join(missing)} that the data lacks")


def _sample(table: pa.Table, max_rows: int, seed: int) -> pa.Table:
    if table.num_rows <= max_rows:
        return table
    idx = np.sort(np.random.default_rng(seed).choice(table.num_rows, max_rows, replace=False))
    return table.take(pa.array(idx))


def train_on(model: ModelSpec, left: pa.Table, right: pa.Table | None, *, threads: int = 1) -> dict[str, Any]:
    """Train ``model`` in this process on (a bounded sample of) the data; sets model.splink."""
    t = model.training
    max_rows = int(t.get("sample_max_register_rows", 300_000))
    seed = int(t.get("seed", 42))
    ref = right if right is not None else left
    tf = tf_tables(model, ref)
    col = t.get("sample_column", "birth_year")
    full = None
    if ref.num_rows > max_rows and col in ref.column_names:
        counts = pc.value_counts(pc.drop_null(ref.column(col)))
        values = counts.field("values").to_pylist()
        sizes = dict(zip(values, counts.field("counts").to_pylist()))
        rng = np.random.default_rng(seed)
        rng.shuffle(values)
        chosen, total = [], 0
        for v in values:
            if not chosen or total + sizes[v] <= max_rows:
                chosen.append(v)
                total += sizes[v]
        keep = pa.array(chosen, ref.schema.field(col).type)
        sl = left.filter(pc.fill_null(pc.is_in(left.column(col), value_set=keep), False))
        sr = right.filter(pc.fill_null(pc.is_in(right.column(col), value_set=keep), False)) if right is not None else None
        full = (left.num_rows, ref.num_rows)
    else:
        sl = _sample(left, max_rows, seed)
        sr = _sample(right, max_rows, seed) if right is not None else None
        if sl.num_rows < left.num_rows or (right is not None and sr.num_rows < right.num_rows):
            full = (left.num_rows, ref.num_rows)
    model.splink = train(model, sl, sr, tf, threads=threads, full_sizes=full)
    return {"sample_left_rows": sl.num_rows, "sample_right_rows": sr.num_rows if sr is not None else None,
            "probability_two_random_records_match": model.splink["probability_two_random_records_match"]}


def save_charts(model: ModelSpec, directory: str | Path, stem: str) -> list[str]:
    """Splink's match-weights and m/u charts as self-contained HTML files beside the model."""
    if not model.trained:
        return []
    from splink.internals.settings_creator import SettingsCreator

    settings = SettingsCreator.from_path_or_dict(model.settings()).get_settings("duckdb")
    out = []
    for name, chart in (("match_weights", settings.match_weights_chart()),
                        ("m_u_parameters", settings.m_u_parameters_chart())):
        path = Path(directory) / f"{stem}.{name}.html"
        path.write_text(chart.to_html(inline=True), encoding="utf-8")
        out.append(str(path))
    return out


def _write_parts(table: pa.Table, directory: Path, rows_per_part: int = 500_000) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for i, start in enumerate(range(0, max(table.num_rows, 1), rows_per_part)):
        f = directory / f"part-{i:05d}.parquet"
        pq.write_table(table.slice(start, rows_per_part), f)
        files.append(str(f))
    return files


def link_datasets(model: ModelSpec, inputs: list[str], out: str | Path, *, id_column: str = "unique_id",
                  threshold: float | None = None, client=None, config: LinkConfig | None = None,
                  progress: Progress | None = None) -> dict[str, Any]:
    if len(inputs) not in (1, 2):
        raise InputError("link: give one input (deduplication) or two (link)")
    dedupe = len(inputs) == 1
    if dedupe and model.link_type != "dedupe_only":
        raise ModelError(f"model {model.name!r} is a {model.link_type} model: it needs two inputs")
    if not dedupe and model.link_type != "link_only":
        raise ModelError(f"model {model.name!r} is a {model.link_type} model: it needs one input")
    cfg = config or LinkConfig()
    left = read_dataset(inputs[0], id_column=id_column)
    right = None if dedupe else read_dataset(inputs[1], id_column=id_column)
    _check_columns(model, left, inputs[0])
    if right is not None:
        _check_columns(model, right, inputs[1])
        common = [c for c in left.column_names if c in right.column_names]
        left, right = left.select(common), right.select(common)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".work"
    shutil.rmtree(work, ignore_errors=True)
    info: dict[str, Any] = {"inputs": inputs, "rows": [left.num_rows] + ([right.num_rows] if right is not None else [])}
    if not model.trained:
        info["training"] = train_on(model, left, right) if client is None else _train_remote(client, model, left, right)
    save_model(model, out / "model.json")
    info["charts"] = save_charts(model, out, "model")
    tf = tf_tables(model, right if right is not None else left)
    left_files = _write_parts(left, work / "left")
    right_files = _write_parts(right, work / "right") if right is not None else None
    shutil.rmtree(out / "pairs", ignore_errors=True)
    info["scoring"] = score_rules(work, model, tf, cfg, left_files=left_files, right_files=right_files,
                                  out=out / "pairs", schema=left.schema, client=client, progress=progress)
    thr = threshold if threshold is not None else float(model.decision.get("threshold", 0.9))
    edges = []
    for f in sorted((out / "pairs").glob("*.parquet")):
        t = pq.read_table(f)
        t = t.filter(pc.greater_equal(t.column("match_probability"), thr))
        a = t.column("unique_id_l").to_numpy()
        b = t.column("unique_id_r").to_numpy()
        if not dedupe:  # ids of the two inputs live in one node space: tag the side
            a, b = _node(a, 0), _node(b, 1)
        edges.append((a, b))
    nodes, comps = connected_components(edges, client=None)
    side = np.where(np.isin(nodes, _node(left.column("unique_id").to_numpy(), 0)), 0, 1) if not dedupe \
        else np.zeros(len(nodes), np.int64)
    ids = _unnode(nodes, side, left, right) if not dedupe else nodes
    clusters = pa.table({"source_dataset": pa.array(np.where(side == 0, "left", "right") if not dedupe
                                                    else np.full(len(nodes), "input")),
                         "unique_id": pa.array(ids.astype(np.int64)), "cluster_id": pa.array(comps)})
    (out / "clusters").mkdir(exist_ok=True)
    pq.write_table(clusters, out / "clusters" / "part-00000.parquet")
    shutil.rmtree(work, ignore_errors=True)
    info.update(threshold=thr, clustered_records=clusters.num_rows,
                clusters=int(len(np.unique(comps))) if len(comps) else 0)
    return info


def _node(ids: np.ndarray, side: int) -> np.ndarray:
    return hash_rows(np.full(len(ids), side, np.int64), ids.astype(np.int64))


def _unnode(nodes, side, left, right):
    lid = left.column("unique_id").to_numpy()
    rid = right.column("unique_id").to_numpy()
    lmap = dict(zip(_node(lid, 0).tolist(), lid.tolist()))
    rmap = dict(zip(_node(rid, 1).tolist(), rid.tolist()))
    return np.array([lmap[n] if s == 0 else rmap[n] for n, s in zip(nodes.tolist(), side.tolist())], np.int64)


def _train_remote(client, model, left, right):
    fut = client.submit(_train_and_return, model, left, right, pure=False)
    info, settings = fut.result()
    model.splink = settings
    return info


def _train_and_return(model, left, right):
    info = train_on(model, left, right)
    return info, model.splink
