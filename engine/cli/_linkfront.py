"""What `nirlink link`, `nirlink model train` and `nirlink evaluate` share: the model argument,
the inputs read with the ingest readers' options, the settings of a run, the output manifest."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import typer

__all__ = ["CsvArgs", "load_model_arg", "read_inputs", "link_config", "write_manifest", "read_manifest",
           "MANIFEST_KIND"]

MANIFEST_KIND = "nirlink-link"


@dataclass(frozen=True)
class CsvArgs:
    """Reading options of the inputs, as the job file's ``csv`` table and ``format`` take them."""

    format: str = "auto"
    separator: str = "auto"
    encoding: str = "auto"
    decimal: str = "auto"
    null_values: tuple[str, ...] = ()

    def options(self):
        from nirlink.engine.io._readers import CsvOptions

        if self.encoding not in ("auto", "utf-8", "latin-1"):
            raise typer.BadParameter(f"--encoding must be auto, utf-8 or latin-1, got {self.encoding!r}")
        if self.decimal not in ("auto", ".", ","):
            raise typer.BadParameter(f"--decimal must be auto, '.' or ',', got {self.decimal!r}")
        if self.format not in ("auto", "csv", "parquet"):
            raise typer.BadParameter(f"--format must be auto, csv or parquet, got {self.format!r}")
        sep = {"tab": "\t", "\\t": "\t"}.get(self.separator, self.separator)
        return CsvOptions(separator=sep, encoding=self.encoding, decimal=self.decimal)


def load_model_arg(path: str | None, builtin: str = "identity"):
    """A model file (nirlink or plain Splink JSON), or the built-in 'identity' / 'register' model."""
    from nirlink.linkage import identity_model, load_model, register_model

    if path in (None, "identity", "register"):
        return identity_model() if (path or builtin) == "identity" else register_model()
    return load_model(path)


def read_inputs(model, inputs: list[Path], *, id_column: str, csv: CsvArgs,
                extra: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    """Each input's id column, the model's columns and ``extra`` columns, read as the job's
    ingest reads its files (text unless the model's ``columns`` say otherwise; empty -> null)."""
    from nirlink.engine.io._tables import read_table
    from nirlink.linkage._model_sql import model_columns

    used = model_columns(model)
    wanted = list(dict.fromkeys([id_column, *used, *extra]))
    uses = {c: f"{w} of the model {model.name!r}" for c, w in used.items()}
    uses[id_column] = "the record id: --id-column or the model's id_column"
    options = csv.options()

    def read(p):
        return str(p), read_table(p, wanted, types=dict(model.columns), keep_native=[id_column], format=csv.format,
                                  csv_options=options, null_values=csv.null_values, what="asked for", uses=uses)

    if len(inputs) == 1:
        return [read(inputs[0])]
    from concurrent.futures import ThreadPoolExecutor

    # the two inputs at once: the CSV scanner and Arrow's reader release the GIL
    with ThreadPoolExecutor(max_workers=len(inputs)) as pool:
        return list(pool.map(read, inputs))


def link_config(min_probability: float | None):
    """The link settings (``nirlink.linkage.*``) of a `nirlink link` run, and the prediction floor."""
    from nirlink.engine import _config
    from nirlink.linkage import LinkConfig

    floor = float(_config.get("linkage.prediction-floor", 0.01)) if min_probability is None else min_probability
    cfg = LinkConfig(
        rows_per_scoring_task=int(_config.get("linkage.rows-per-scoring-task", 200_000)),
        duckdb_threads=int(_config.get("linkage.duckdb-threads", 1)),
        duckdb_memory_limit=_config.get("linkage.duckdb-memory-limit", "2GB"),
        prediction_floor=floor,
    )
    return cfg, floor


def write_manifest(directory: Path, *, model_arg: str, model, inputs: list[tuple[str, Any]], csv: CsvArgs,
                   id_column: str, execution: dict, settings: dict, info: dict) -> dict:
    from nirlink import __version__
    from nirlink.engine.io._datasets import describe_dataset, write_json

    datasets = {name: describe_dataset(directory / name, relative_to=directory)
                for name in ("pairs", "clusters", "links") if (directory / name).exists()}
    manifest = {
        "kind": MANIFEST_KIND, "nirlink_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "model": {"argument": model_arg, "name": model.name, "link_type": model.link_type,
                  "trained_by_this_run": "training" in info},
        "inputs": [{"path": str(Path(p).resolve()), "rows": t.num_rows} for p, t in inputs],
        "id_column": id_column, "reading": asdict(csv),
        "execution": execution, "settings": settings,
        "term_frequencies": "counted on every input together, as Splink counts them",
        "result": info, "datasets": datasets,
    }
    write_json(directory / "_manifest.json", manifest)
    return manifest


def read_manifest(directory: Path) -> dict | None:
    from nirlink.engine.io._datasets import read_json

    path = Path(directory) / "_manifest.json"
    if not path.exists():
        return None
    data = read_json(path)
    return data if isinstance(data, dict) and data.get("kind") == MANIFEST_KIND else None
