"""`nirlink cluster certs`: TLS certificates for a test or small deployment."""

from __future__ import annotations

from pathlib import Path

import typer

from . import app
from ._utilities import OutputFormat, emit, handle_errors

cluster_app = typer.Typer(help="Cluster helpers.\n\nExample: nirlink cluster certs tls/ --host scheduler.example.org",
                          no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("certs")
@handle_errors(private=False)  # certificates are public; their keys are written 0600 anyway
def certs(directory: Path = typer.Argument(..., help="Where to write ca.pem and the role certificates."),
          hosts: list[str] = typer.Option(["localhost", "127.0.0.1"], "--host", help="Host names / IPs of the certs."),
          days: int = typer.Option(365, "--days", help="Validity in days."),
          output: OutputFormat = typer.Option(OutputFormat.text, "--output", help="text or json.")) -> None:
    """Make a CA and scheduler, worker and client certificates signed by it.

    Example: nirlink cluster certs tls/ --host scheduler.example.org --host 10.0.0.5
    """
    from nirlink.cluster import make_certificates

    files = make_certificates(directory, hosts=tuple(hosts), days=days)

    def render(d):
        for role, path in d.items():
            typer.echo(f"{role:<10} {path}")
        typer.echo(f"scheduler: dask scheduler --protocol tls --tls-ca-file {d['ca']} "
                   f"--tls-cert {directory}/scheduler.pem --tls-key {directory}/scheduler-key.pem")
        typer.echo(f"workers:   dask worker tls://SCHEDULER:8786 --tls-ca-file {d['ca']} "
                   f"--tls-cert {directory}/worker.pem --tls-key {directory}/worker-key.pem")
        typer.echo(f"nirlink:   DASK_NIRLINK__CLUSTER__TLS_DIR={directory} nirlink submit JOB.toml --scheduler "
                   "tls://SCHEDULER:8786")
        typer.echo(f"(the recipe's start-scheduler.sh / start-worker.sh do the same with TLS_DIR={directory})")

    emit(files, output, render)
