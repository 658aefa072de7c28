"""The link stage: ingested rows and register in, a link table (signature -> person) out.

Steps, one module each in linkage/: signatures (_signatures), register (_register), term
frequencies and training of the identity and register models unless trained models are given
(_frequencies, _training), register deduplication (_dedupe), the deterministic pass
(_deterministic), distributed Splink scoring of what it left (_scoring), decisions
(_decisions). Published atomically with a manifest.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nirlink.engine.io._datasets import describe_dataset, read_json, staged_directory, write_json
from nirlink.engine.io._schemas import IDENTITIES
from nirlink.kernels import InputError

__all__ = ["run_link", "ingested_files", "identity_files"]


def ingested_files(ingest_dir: str | Path) -> dict[str, list[str]]:
    """Accepted Parquet files of an ingest stage output, by kind (career / resource / register)."""
    ingest_dir = Path(ingest_dir)
    manifest_path = ingest_dir / "_manifest.json"
    if not manifest_path.exists():
        raise InputError(f"{ingest_dir}: no ingest manifest (_manifest.json): run the ingest stage first")
    manifest = read_json(manifest_path)
    out: dict[str, list[str]] = {"career": [], "resource": [], "register": []}
    for name, info in manifest["inputs"].items():
        files = sorted(str(p) for p in (ingest_dir / name).glob("*.parquet"))
        out[info["kind"]].extend(files)
    return out


def identity_files(ingest_dir: str | Path) -> dict[str, list[str]]:
    """The identities files of the ingested declared rows (``ingest/identities/<input>/``: each
    part file's distinct signatures with their identity columns), by kind (career / resource)."""
    ingest_dir = Path(ingest_dir)
    manifest = read_json(ingest_dir / "_manifest.json")
    out: dict[str, list[str]] = {"career": [], "resource": []}
    for name, info in manifest["inputs"].items():
        if info["kind"] not in out:
            continue
        rows = sorted((ingest_dir / name).glob("*.parquet"))
        files = sorted((ingest_dir / IDENTITIES / name).glob("*.parquet"))
        if [p.name for p in rows] != [p.name for p in files]:
            raise InputError(f"{ingest_dir / IDENTITIES / name}: the identities of the ingested rows of input "
                             f"{name!r} are missing or incomplete ({len(files)} files for {len(rows)} part files; "
                             "ingested by an older nirlink?): run the job with --restart")
        out[info["kind"]].extend(str(p) for p in files)
    return out


def _consume(ingest_dir: Path, parts: tuple[str, ...], register_files: list[str]) -> None:
    """Remove the ingest output's ``parts`` (marked released by the caller) once read: the
    register input (read by build_register only; removed only when it is the input of kind
    register) and the identities of the declared rows (read by build_signatures only)."""
    for part in parts:
        target = ingest_dir / part
        if part == "register" and register_files and all(Path(f).parent == target for f in register_files):
            shutil.rmtree(target, ignore_errors=True)
        elif part == IDENTITIES:
            shutil.rmtree(target, ignore_errors=True)


def run_link(ingest_dir: str | Path, out_dir: str | Path, *, client=None, model_path: str | Path | None = None,
             register_model_path: str | Path | None = None, decisions_path: str | Path | None = None, config=None,
             progress: Callable[..., None] | None = None, increment=None, consume: tuple[str, ...] = ()) -> dict[str, Any]:
    """The link stage; ``increment`` (IncrementOptions): continue the previous job's link stage
    (linkage/_increment.py): its decisions kept where their candidates did not change.
    ``consume``: the parts of the ingest output this stage is the job's last reader of
    (``register``, ``identities``; engine/jobs/_release.py ``consume_parts``), removed as soon as the step
    reading them is done, not when the stage publishes: the rest of the stage, its longest
    part, need not hold them."""
    from nirlink.linkage import LinkConfig, identity_model, load_model, register_model, save_model
    from nirlink.linkage._clerical import load_decisions
    from nirlink.linkage._decisions import decide
    from nirlink.linkage._dedupe import dedupe_register
    from nirlink.linkage._deterministic import deterministic_pass
    from nirlink.linkage._explain import save_tf
    from nirlink.linkage._register import build_register
    from nirlink.linkage._scoring import score_rules
    from nirlink.linkage._signatures import build_signatures
    from nirlink.linkage._review import write_review
    from nirlink.linkage._training import model_frequencies, train_models

    from nirlink.engine.jobs._release import keeps_increment_inputs

    files = ingested_files(ingest_dir)
    if not files["register"]:
        raise InputError(f"{ingest_dir}: no register rows were ingested; the link stage needs the register")
    cfg = config or LinkConfig()
    model = load_model(model_path) if model_path else identity_model()
    reg_model = load_model(register_model_path) if register_model_path else register_model()
    timings: dict[str, float] = {}
    out_dir = Path(out_dir)

    def timed(name, fn, *a, **k):
        t0 = time.perf_counter()
        res = fn(*a, **k)
        timings[name] = round(time.perf_counter() - t0, 3)
        return res

    with staged_directory(out_dir) as work:
        work = work.resolve()
        kw = dict(client=client, progress=progress)
        sig = timed("signatures", build_signatures, identity_files(ingest_dir), work, cfg, **kw)
        reg = timed("register", build_register, files["register"], work, **kw)
        _consume(Path(ingest_dir), consume, files["register"])
        from nirlink.linkage._prepare import LINK_COLUMNS
        from nirlink.linkage._register import register_files
        from nirlink.linkage._signatures import signature_files

        prev = Path(increment.previous).resolve() / "link" if increment is not None else None
        if prev is not None:
            from nirlink.linkage._increment import merge_signatures, register_diff

            diff = timed("register_diff", register_diff, prev, work)
            merged = timed("increment_signatures", merge_signatures, prev, work, diff, cfg,
                           retrain=increment.retrain == "always", model=model, **kw)
        # clerical decisions are checked before the long phases: a bad line fails the stage at once
        clerical = load_decisions(decisions_path, signature_files(work), register_files(work),
                                  files["career"] + files["resource"]) if decisions_path else None
        if prev is not None:
            from nirlink.linkage._increment_persons import carried_clerical

            clerical = carried_clerical(prev, diff["removed"], clerical)
        models = {"identity": model, "register": reg_model}
        # the term frequencies serve scoring whether the models are trained here or given
        tf = timed("frequencies", model_frequencies, work, models, **kw)
        trained = timed("training", train_models, work, models, cfg, tf=tf, **kw)
        timings.update(trained["timings_s"])  # its parts: sample, u, em
        save_model(model, work / "model.json")
        save_model(reg_model, work / "register_model.json")
        tf = trained["tf"]
        for name, tables in tf.items():  # kept for `nirlink explain` and the review
            save_tf(tables, work / "tf" / name)
        dedupe = timed("register_dedupe", dedupe_register, work, reg_model, tf["register"], cfg, **kw)
        if prev is not None:
            from nirlink.linkage._increment import carry_predictions, score_increment
            from nirlink.linkage._increment_persons import stable_clusters

            dedupe.update(stable_clusters(prev, work))
        if prev is not None and increment.retrain != "always":
            from nirlink.linkage._increment import deterministic_increment

            det = timed("deterministic", deterministic_increment, prev, work, diff, cfg, **kw)
        else:
            det = timed("deterministic", deterministic_pass, work, cfg, **kw)
        if prev is None:
            scored = timed("scoring", score_rules, work, model, tf["identity"], cfg, left_files=signature_files(work),
                           right_files=register_files(work), out=work / "predictions", schema=LINK_COLUMNS,
                           exclude_linked=True, linked=det["distinct_signatures"], candidates=True, **kw)
        else:
            merged["carried_candidates"] = carry_predictions(prev, work, diff, cfg, **kw)
            scored = timed("scoring", score_increment, work, model, tf["identity"], cfg, diff, **kw)
        # an unchanged decision keeps the previous job's scores, unless the model was trained again
        carried_from = prev if prev is not None and increment.retrain != "always" else None
        decided = timed("decisions", decide, work, model, cfg, clerical=clerical, previous=carried_from, **kw)
        drift_task = None
        if prev is not None:
            from functools import partial

            from nirlink.linkage._drift import drift_check
            from nirlink.linkage._increment_persons import person_changes
            from nirlink.linkage._tasks import cancel_tasks, submit_tasks, wait_tasks

            # the drift check (two samples compared by the model: ~2 s at 200,000 persons, one
            # task) runs on a worker while this process writes person_changes and the review
            # (without a cluster: here, first)
            drift_start = time.perf_counter()
            drift_task = submit_tasks(client, partial(drift_check, tolerance=increment.drift_tolerance),
                                      [(work, prev, model, tf["identity"])], name="drift")[0]
            if client is None:
                timings["drift_check"] = round(time.perf_counter() - drift_start, 3)
        try:
            if prev is not None:
                changes = person_changes(prev, work, increment.month)
            # the review's queries run here while no task does (but an increment's drift check):
            # on every core this process may use (3.1-3.5 -> 2.1 s at 2M persons with two)
            review_threads = cfg.duckdb_threads if drift_task is not None else \
                max(cfg.duckdb_threads, len(os.sched_getaffinity(0)))
            review = timed("review", write_review, work, model, tf["identity"], threads=review_threads,
                           memory_limit=cfg.duckdb_memory_limit)
            if drift_task is not None:
                drift = wait_tasks(client, [drift_task], name="drift")[0]
                if client is not None:
                    timings["drift_check"] = round(time.perf_counter() - drift_start, 3)  # overlapped: till its result
                shutil.rmtree(work / "month", ignore_errors=True)
        except BaseException:
            if drift_task is not None:
                cancel_tasks(client, [drift_task])  # it reads this stage's directory, removed on the way out
            raise
        # the candidates' buckets of the deterministic pass and of scoring are read by the
        # decisions (and a later increment's link stage) only: link/candidates keeps each
        # signature's best 3 for explain and review
        for scratch in ("tmp",) if keeps_increment_inputs() else ("tmp", "deterministic", "predictions"):
            shutil.rmtree(work / scratch, ignore_errors=True)
        manifest = {
            "stage": "link",
            "model": model.name,
            "signatures": sig,
            "register": reg,
            "training": trained["training"],
            "register_dedupe": dedupe,
            "deterministic": det,
            "scoring": scored,
            "decisions": decided,
            "clerical": {"file": str(decisions_path), "decisions": clerical.num_rows} if clerical is not None else None,
            "review": review,
            "increment": None if prev is None else {
                "previous": str(prev.parent), "month": increment.month, "retrain": increment.retrain,
                "register": {k: len(v) for k, v in diff.items()}, "signatures": merged,
                "person_changes": changes.num_rows, "drift": drift},
            "notes": [] if prev is None or not drift["retrain_advised"] else [
                f"drift: {len(drift['moved'])} comparison level(s) of this month's records moved more than "
                f"{drift['tolerance_bits']} bits (and {drift['z']} standard errors) from the previous job's m or u "
                f"estimate (largest {drift['moved'][0]['bits']} bits, "
                f"{drift['moved'][0]['comparison']} '{drift['moved'][0]['level']}'): retraining is advised "
                "(increment.retrain = \"always\")"],
            "timings_s": timings,
            "tables": {name: describe_dataset(work / name, relative_to=work)
                       for name in ("links", "signatures", "candidates", "person_changes") if (work / name).exists()},
        }
        write_json(work / "_manifest.json", manifest)
    return manifest
