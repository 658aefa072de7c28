"""`nirlink synth`: generate a synthetic register, careers, resources and truth."""

from __future__ import annotations

from pathlib import Path

import typer

from . import app
from ._utilities import OutputFormat, emit, handle_errors, scheduler_address, stderr_console


@app.command()
@handle_errors
def synth(
    persons: int = typer.Option(None, "--persons", min=1, help="Number of persons in the register (before duplicates)."),
    out: Path = typer.Option(..., "--out", help="Output directory (gets register/, career/, resource/, truth/)."),
    seed: int = typer.Option(None, "--seed", help="Seed (default: nirlink.synth.seed, 0; an increment: its dataset's)."),
    partitions: int = typer.Option(None, "--partitions", min=1, help="Number of blocks (one Dask task and one file each)."),
    scheduler: str = typer.Option(None, "--scheduler", callback=scheduler_address, help="Dask scheduler address; default: a local cluster."),
    workers: int = typer.Option(None, "--workers", help="Workers of the local cluster (default: one per core)."),
    noise_scale: float = typer.Option(1.0, "--noise-scale", help="Multiply every noise rate (2 = double noise)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the datasets if OUT is not empty."),
    local: bool = typer.Option(False, "--in-process", help="Generate in this process, without Dask."),
    write_job: Path = typer.Option(None, "--write-job", help="Also write a job file running the main job on OUT."),
    job_output: Path = typer.Option(None, "--job-output", help="Output directory named in that job file "
                                                                 "(default: OUT/../job; an increment: "
                                                                 "OUT/../job-YYYY-MM)."),
    increment_of: Path = typer.Option(None, "--increment-of", help="Write the monthly increment of this synthetic "
                                                                     "dataset (a base or an increment) instead."),
    month: str = typer.Option(None, "--month", help="The increment's month, YYYY-MM (with --increment-of)."),
    union_of: Path = typer.Option(None, "--union", help="Write the union of a base and its increments up to this "
                                                         "increment instead."),
    previous_job: Path = typer.Option(None, "--previous-job", help="With --increment-of and --write-job: the previous "
                                                                   "job's output directory (default: the previous "
                                                                   "dataset's default job output)."),
    output: OutputFormat = typer.Option(OutputFormat.text, "--output", help="text or json."),
) -> None:
    """Generate the four synthetic datasets (Parquet) of PERSONS persons under OUT; or the
    monthly increment of a dataset (--increment-of DIR --month YYYY-MM); or the union of a base
    and its increments (--union LAST).

    Example: nirlink synth --persons 10000 --out data/ --write-job job.toml
    """
    modes = [name for name, v in (("--persons", persons), ("--increment-of", increment_of), ("--union", union_of))
             if v is not None]
    if len(modes) != 1:
        raise typer.BadParameter("give exactly one of --persons, --increment-of and --union"
                                 + (f" (got {', '.join(modes)})" if modes else ""))
    if (month is None) != (increment_of is None):
        raise typer.BadParameter("--month and --increment-of go together")
    if previous_job is not None and (increment_of is None or write_job is None):
        raise typer.BadParameter("--previous-job goes with --increment-of and --write-job (it is named in the job file)")
    if increment_of is not None or union_of is not None:
        for name, given in (("--partitions", partitions is not None), ("--noise-scale", noise_scale != 1.0),
                            ("--scheduler", scheduler is not None), ("--workers", workers is not None)):
            if given:
                raise typer.BadParameter(f"{name} applies to a base dataset (--persons): an increment takes the "
                                         "settings of the dataset it builds on and runs in this process")
        from ._synth_increment import run_increment

        return run_increment(increment_of=increment_of, month=month, union_of=union_of, out=out, seed=seed,
                             overwrite=overwrite, write_job=write_job, job_output=job_output,
                             previous_job=previous_job, output=output)
    from nirlink.engine.synth._generate import synth as run_synth
    from nirlink.engine.synth._params import SynthParams

    overrides = {} if seed is None else {"seed": seed}
    params = SynthParams.from_config(**overrides)
    if noise_scale != 1.0:
        if noise_scale < 0:
            raise typer.BadParameter("--noise-scale must be >= 0")
        from dataclasses import replace

        params = replace(params, noise=params.noise.scaled(noise_scale))
    console = stderr_console()
    show = output == OutputFormat.text

    def generate(client):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("synth blocks"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, disable=not show, transient=True) as bar:
            task = bar.add_task("blocks", total=None)

            def progress(done, total):
                bar.update(task, completed=done, total=total)

            return run_synth(out, persons=persons, client=client, partitions=partitions, params=params,
                             overwrite=overwrite, progress=progress)

    if local:
        summary = generate(None)
    else:
        from nirlink.cluster import open_client

        with open_client(scheduler, n_workers=workers, dashboard=False) as client:
            summary = generate(client)

    if write_job is not None:
        from nirlink.engine.synth._jobfile import write_job_file

        write_job_file(out, write_job, output=job_output or (Path(out).parent / "job"))
        summary["job_file"] = str(write_job)

    def render(s):
        r = s["rows"]
        total = r["register"] + r["career"] + r["resource"]
        typer.echo(f"persons    {s['persons']:>14,}  ({s['partitions']} partitions, seed {s['seed']})")
        for name in ("register", "career", "resource", "truth"):
            typer.echo(f"{name:<10} {r[name]:>14,}  {s['datasets'][name]}")
        typer.echo(f"career rows per person {s['career_rows_per_person']:.1f}, resource rows per person "
                   f"{s['resource_rows_per_person']:.1f}")
        typer.echo(f"{total:,} rows in {s['seconds']:.1f} s ({total / max(s['seconds'], 1e-9):,.0f} rows/s, truth excluded)")
        if s.get("job_file"):
            typer.echo(f"job file: {s['job_file']}")

    emit(summary, output, render)
