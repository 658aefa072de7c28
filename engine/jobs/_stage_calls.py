"""Each stage's call from a job's runner (``_runner.py``): the stage function with its
arguments taken from the job file, the settings and the job directory."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

from nirlink.engine import _config
from nirlink.kernels import StageError

from ._release import consume, consume_parts, keeps_increment_inputs

if TYPE_CHECKING:
    from ._runner import Job

__all__ = ["run_stage"]


def run_stage(job: Job, stage: str) -> dict[str, Any]:
    d, s, c = job.dir, job.spec, job.client
    progress = job._progress(stage)
    if stage == "ingest":
        from nirlink.engine.stages._ingest import run_ingest

        def ingest_progress(done, total, rows=None):
            progress("read", done, total, rows)

        return run_ingest(list(s.inputs), d / "ingest", client=c,
                          chunk_rows=int(_config.get("ingest.chunk-rows", 1_000_000)), progress=ingest_progress)
    if stage == "link":
        from nirlink.engine.stages._link import run_link
        from nirlink.linkage import LinkConfig, identity_model, load_model, save_model

        inc = s.increment
        previous_link = inc.directory / "link" if inc is not None and inc.retrain == "never" else None
        # an increment scores with the previous job's models unless the job file names its own
        model_path = s.linkage.model or (str(previous_link / "model.json") if previous_link else None)
        register_model_path = s.linkage.register_model or (
            str(previous_link / "register_model.json") if previous_link else None)
        if s.linkage.threshold is not None or s.linkage.margin is not None or s.linkage.none_weight is not None:
            model = load_model(model_path) if model_path else identity_model()
            if s.linkage.threshold is not None:
                model.decision["threshold"] = s.linkage.threshold
            if s.linkage.margin is not None:
                model.decision["margin"] = s.linkage.margin
            if s.linkage.none_weight is not None:
                model.decision["none_weight"] = s.linkage.none_weight
            model_path = str(job.paths["dir"] / "model-requested.json")
            save_model(model, model_path)
        cfg = LinkConfig(
            signature_buckets=int(_config.get("linkage.signature-buckets", 8)),
            rows_per_scoring_task=int(_config.get("linkage.rows-per-scoring-task", 200_000)),
            duckdb_threads=int(_config.get("linkage.duckdb-threads", 1)),
            duckdb_memory_limit=_config.get("linkage.duckdb-memory-limit", "2GB"),
            prediction_floor=float(_config.get("linkage.prediction-floor", 0.01)),
            evidence_floor=float(_config.get("linkage.evidence-floor", 0.0)),
        )
        return run_link(d / "ingest", d / "link", client=c, model_path=model_path,
                        register_model_path=register_model_path, decisions_path=s.linkage.decisions,
                        config=cfg, progress=progress, increment=inc,
                        consume=consume_parts(d, "ingest", "link", s.stages))
    if stage == "attach":
        from nirlink.engine.stages._attach import run_attach

        if s.increment is not None:
            from nirlink.engine.stages._attach_increment import run_attach_increment

            return run_attach_increment(d / "ingest", d / "link", d / "attach", s.increment.previous,
                                        month=s.increment.month, client=c, progress=progress,
                                        consume=consume(d, "ingest", "attach", s.stages))
        return run_attach(d / "ingest", d / "link", d / "attach", client=c, progress=progress,
                          consume=consume(d, "ingest", "attach", s.stages))
    if stage == "aggregate":
        from nirlink.engine.stages._aggregate import run_aggregate

        scratch = d / ".aggregate-input"  # without attach: person buckets, removed once published
        eat = False  # the attach stage's buckets removed as read, when no later stage reads them
        if (d / "attach" / "_manifest.json").exists() and "attach" in s.stages:
            eat = consume(d, "attach", "aggregate", s.stages)
            career = d / "attach" / "career" if (d / "attach" / "career").exists() else None
            resource = d / "attach" / "resource" if (d / "attach" / "resource").exists() else None
            partitioned = True
        else:
            from nirlink.engine.stages._attach import declared_persons

            shutil.rmtree(scratch, ignore_errors=True)
            career, resource = declared_persons(d / "ingest", scratch, client=c, progress=progress)
            partitioned = True  # person buckets on disk, as the attach stage writes them
        increment = None
        if s.increment is not None:
            from nirlink.engine.io._datasets import read_json

            attached = read_json(d / "attach" / "_manifest.json")["increment"]
            increment = {"previous": s.increment.directory / "aggregate", "affected": attached["affected_buckets"],
                         "rewritten": attached["rewritten_buckets"], "new_prefix": f"m{s.increment.month}-",
                         "rows_suffix": f"-m{s.increment.month}", "delta": d / "attach" / "delta"}
        manifest = run_aggregate(career=career, resource=resource, out_dir=d / "aggregate", client=c,
                                 partitioned_by_person=partitioned, first_review_month=s.first_review_month,
                                 consume=eat, increment=increment, state=keeps_increment_inputs(),
                                 progress=lambda done, total, rows=None: progress("aggregate", done, total, rows))
        shutil.rmtree(scratch, ignore_errors=True)
        return manifest
    if stage == "signals":
        from nirlink.engine.stages._signals import run_signals

        return run_signals(d, d / "signals", client=c, settings=s.signals, progress=progress)
    if stage == "export":
        from nirlink.engine.stages._export import run_export

        return run_export(d, d / "export", client=c, key=job._key(), progress=progress,
                          signals="signals" in s.stages,
                          consume=("aggregate",) if consume(d, "aggregate", "export", s.stages) else ())
    raise StageError(f"unknown stage {stage!r}")
