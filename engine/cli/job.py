"""`nirlink job check`: validate a job file without running anything."""

from __future__ import annotations

from pathlib import Path

import typer

from . import app
from ._utilities import OutputFormat, emit, handle_errors

job_app = typer.Typer(help="Job files.\n\nExample: nirlink job check job.toml", no_args_is_help=True)
app.add_typer(job_app, name="job")


@job_app.command("check")
@handle_errors
def check(file: Path = typer.Argument(..., help="Job file (TOML)."),
          output: OutputFormat = typer.Option(OutputFormat.text, "--output", help="text or json.")) -> None:
    """Validate FILE: every problem is reported at once, with its field path.

    Example: nirlink job check job.toml --output json
    """
    from nirlink.engine.jobs._spec import load_job

    spec = load_job(file)
    data = {"name": spec.name, "stages": list(spec.stages), "inputs": [{"name": i.name, "kind": i.kind,
                                                                         "paths": list(i.paths)} for i in spec.inputs],
            "output": spec.output.directory, "cluster": spec.cluster.address or "local", "valid": True}

    def render(d):
        typer.echo(f"{file}: valid job {d['name']!r}: stages {', '.join(d['stages'])}; {len(d['inputs'])} input(s); "
                   f"output {d['output']}")

    emit(data, output, render)
