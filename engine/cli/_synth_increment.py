"""`nirlink synth --increment-of DIR --month YYYY-MM` and `nirlink synth --union LAST`."""

from __future__ import annotations

from pathlib import Path

from ._utilities import OutputFormat, emit


def default_job_output(data: Path, month: str | None) -> Path:
    """The job output a job file written by `nirlink synth --write-job` names by default:
    DATA/../job for a base, DATA/../job-YYYY-MM for the increment of that month."""
    return Path(data).resolve().parent / ("job" if month is None else f"job-{month}")


def run_increment(*, increment_of: Path | None, month: str | None, union_of: Path | None, out: Path,
                  seed: int | None, overwrite: bool, write_job: Path | None, job_output: Path | None,
                  previous_job: Path | None, output: OutputFormat) -> None:
    from nirlink.engine.synth._jobfile import write_job_file

    if union_of is not None:
        from nirlink.engine.synth._union import union

        if seed is not None or previous_job is not None:
            import typer

            raise typer.BadParameter("--seed and --previous-job do not apply to --union")
        summary = union(union_of, out, overwrite=overwrite)
        if write_job is not None:
            write_job_file(out, write_job, output=job_output or default_job_output(out, None), name="synthetic-union")
            summary["job_file"] = str(write_job)
    else:
        from nirlink.engine.synth._describe import describe
        from nirlink.engine.synth._increment import increment

        summary = increment(increment_of, out, month=month, seed=seed, overwrite=overwrite)
        if write_job is not None:
            prev = describe(increment_of)
            previous = previous_job or default_job_output(prev.root, summary_month(prev))
            extra = (f'\n[increment]\nprevious = "{Path(previous).resolve().as_posix()}"\n'
                     f'month = "{summary["month"]}"\n')
            write_job_file(out, write_job, output=job_output or default_job_output(out, summary["month"]),
                           name=f"synthetic-{summary['month']}", extra=extra)
            summary["job_file"] = str(write_job)

    def render(s):
        r = s["rows"]
        if "union_of" in s:
            typer_echo(f"union of {len(s['union_of'])} datasets up to {s['last_month']}: {s['persons']:,} persons")
        else:
            c = s["register_changes"]
            typer_echo(f"increment {s['month']} of {s['increment_of']} (seed {s['seed']}): {s['persons']:,} persons")
            typer_echo("register changes: " + ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in c.items()))
        for name in ("register", "career", "resource", "truth"):
            typer_echo(f"{name:<10} {r[name]:>14,}  {s['datasets'][name]}")
        if "share_of_base_rows" in s:
            typer_echo(f"new rows: {100 * s['share_of_base_rows']:.2f}% of the base's rows")
        if s.get("job_file"):
            typer_echo(f"job file: {s['job_file']}")

    emit(summary, output, render)


def summary_month(described) -> str | None:
    from nirlink.engine.synth._describe import format_month

    return None if described.month is None else format_month(described.month)


def typer_echo(text: str) -> None:
    import typer

    typer.echo(text)
