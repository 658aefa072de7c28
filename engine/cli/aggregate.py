"""`nirlink aggregate`: per-person career and resource tables from rows that carry a person."""

from __future__ import annotations

from pathlib import Path

import typer

from . import app
from ._utilities import OutputFormat, emit, handle_errors, scheduler_address


@app.command()
@handle_errors
def aggregate(
    out: Path = typer.Option(..., "--out", help="Output directory for the aggregate tables."),
    career: Path = typer.Option(None, "--career", help="Career rows (Parquet) with a 'person' column."),
    resource: Path = typer.Option(None, "--resource", help="Resource rows (Parquet) with a 'person' column."),
    synthetic: Path = typer.Option(None, "--synthetic", help="A `nirlink synth` directory: aggregate on the true persons."),
    partitioned: bool = typer.Option(False, "--partitioned", help="Each input file holds all rows of its persons (no shuffle)."),
    partitions: int = typer.Option(None, "--partitions", help="Partitions of the shuffle (default: one per input file)."),
    first_review_month: str = typer.Option("2021-01", "--first-review-month", help="First quarterly review month (YYYY-MM)."),
    scheduler: str = typer.Option(None, "--scheduler", callback=scheduler_address, help="Dask scheduler address; default: a local cluster."),
    workers: int = typer.Option(None, "--workers", help="Workers of the local cluster (default: one per core)."),
    output: OutputFormat = typer.Option(OutputFormat.text, "--output", help="text or json."),
) -> None:
    """Aggregate careers (quarters, capped salaries, SAM) and resources (months, years, 12-month reviews).

    Example: nirlink aggregate --synthetic data/ --out aggregates/
    """
    from nirlink.cluster import open_client
    from nirlink.engine.jobs._spec import review_month_problem
    from nirlink.engine.stages._aggregate import run_aggregate

    if synthetic is None and career is None and resource is None:
        raise typer.BadParameter("give --career and/or --resource, or --synthetic")
    if review_month_problem(first_review_month):
        raise typer.BadParameter(f"--first-review-month: {review_month_problem(first_review_month)}")
    with open_client(scheduler, n_workers=workers, dashboard=False) as client:
        if synthetic is not None:
            from nirlink.engine.synth._truth import attach_truth

            rows = out.parent / f".{out.name}.rows"
            attach_truth(synthetic, rows, client=client)
            career, resource, partitioned = rows / "career", rows / "resource", True
        manifest = run_aggregate(career=career, resource=resource, out_dir=out, client=client,
                                 partitioned_by_person=partitioned, npartitions=partitions,
                                 first_review_month=first_review_month)
        if synthetic is not None:
            import shutil

            shutil.rmtree(rows, ignore_errors=True)

    def render(m):
        for kind, info in m["inputs"].items():
            typer.echo(f"{kind:<9} {info['rows_in']:>13,} rows in, {info['rows_without_person']:,} without a person, "
                       f"{info['persons']:,} persons")
        for name, t in m["tables"].items():
            typer.echo(f"{name:<24} {t['rows']:>13,} rows  {out / name}")

    emit(manifest, output, render)
