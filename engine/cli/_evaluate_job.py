"""`nirlink evaluate` of a job's link stage, or of its signals stage, against the synthetic truth."""

from __future__ import annotations

from pathlib import Path

from ._utilities import OutputFormat, emit


def evaluate_job(link_dir: Path, rows: Path, truth: Path, *, memory_limit: str, temp_dir: Path | None,
                 output: OutputFormat) -> None:
    """Precision, recall and F1 of a link table against the truth, per signature and per row, by NIR status;
    ambiguous and unlinked counts; blocking reach (with the link stage's model); register duplicates."""
    from nirlink.engine.stages._link import ingested_files
    from nirlink.linkage import load_model
    from nirlink.linkage._evaluate import evaluate as run

    from nirlink.engine.jobs._release import released
    from nirlink.kernels import InputError

    if "*" in released(Path(rows).parent, Path(rows).name):
        raise InputError(f"evaluate: the ingested rows of {rows} were released once the job no longer needed them "
                         "(setting nirlink.jobs.keep): run the job again with --restart, keeping ingest "
                         "(DASK_NIRLINK__JOBS__KEEP=ingest; a run without --restart skips the stages already "
                         "published and brings nothing back)")
    files = ingested_files(rows)
    model = load_model(link_dir / "model.json") if (link_dir / "model.json").exists() else None
    report = run(link_dir, files["career"] + files["resource"], truth, model=model, memory_limit=memory_limit,
                 temp_dir=temp_dir)

    def render(r):
        from rich.console import Console
        from rich.table import Table

        table = Table()
        for col in ("level", "NIR status", "precision", "recall", "F1", "true pos.", "false pos.", "false neg.",
                    "ambiguous", "unlinked"):
            table.add_column(col, justify="left" if col in ("level", "NIR status") else "right", no_wrap=True)
        for level in ("signatures", "rows"):
            groups = [("all", r[level]), *r[f"{level}_by_nir_status"].items()]
            for i, (status, s) in enumerate(groups):
                table.add_row(level if i == 0 else "", status or "(none)", f"{s['precision']:.5f}",
                              f"{s['recall']:.5f}", f"{s['f1']:.5f}", f"{s['true_positives']:,}",
                              f"{s['false_positives']:,}", f"{s['false_negatives']:,}", f"{s['ambiguous']:,}",
                              f"{s['unlinked']:,}", end_section=i == len(groups) - 1)
        console = Console(width=max(200, Console().width), highlight=False)
        console.print("links against the truth (false negatives = ambiguous + unlinked):")
        console.print(table)
        if "blocking" in r:
            b = r["blocking"]
            console.print(f"blocking reaches the true pair of {b['reach']:.4%} of the signatures left to the model "
                          f"({b['true_pair_reached']:,}/{b['signatures_to_model']:,}); by rule: "
                          + ", ".join(f"{n} {v:,}" for n, v in b["reached_by_rule"].items()), highlight=False)
        else:
            console.print("blocking reach: not measured (no model.json or signatures/ in the link directory)",
                          highlight=False)
        if "register_duplicates" in r:
            d = r["register_duplicates"]
            console.print(f"register duplicates: precision {d['precision']:.4f} recall {d['recall']:.4f} "
                          f"(tp {d['true_positives']:,}, fp {d['false_positives']:,}, "
                          f"fn {d['false_negatives']:,})", highlight=False)
        if "register_changes" in r:
            c = r["register_changes"]
            console.print("register changes (" + ", ".join(f"{v:,} {k}" for k, v in c["changes"].items())
                          + f"): {c['links_to_merged_away_entries']:,} signatures linked to an entry merged away",
                          highlight=False)
            for kind, s in c["rows_by_kind"].items():
                console.print(f"  rows of persons with a {kind}: precision {s['precision']:.4f} recall "
                              f"{s['recall']:.4f} (tp {s['true_positives']:,}, fp {s['false_positives']:,}, "
                              f"fn {s['false_negatives']:,})", highlight=False)

    emit(report, output, render)


def evaluate_signals(signals: Path, truth: Path, output: OutputFormat) -> None:
    """Each signal rule's precision and recall against the planted truth."""
    from nirlink.engine.synth._evaluate_signals import evaluate_signals as run

    report = run(signals, truth)

    def render(r):
        from rich.console import Console
        from rich.table import Table

        table = Table()
        for col in ("rule", "precision", "recall", "cases", "truth", "true pos.", "false pos.", "false neg."):
            table.add_column(col, justify="left" if col == "rule" else "right", no_wrap=True)
        rows = list(r["rules"].items())
        if "declarants" in r:
            d = r["declarants"]
            rows += [("declarants: top k", d["top_k"]), ("declarants: top 1%", d["top_1_percent"])]
        for name, s in rows:
            table.add_row(name, f"{s['precision']:.4f}", f"{s['recall']:.4f}", f"{s['cases']:,}", f"{s['truth']:,}",
                          f"{s['true_positives']:,}", f"{s['false_positives']:,}", f"{s['false_negatives']:,}")
        console = Console(width=max(160, Console().width), highlight=False)
        console.print("signals against the planted truth:")
        console.print(table)

    emit(report, output, render)
