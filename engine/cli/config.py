"""`nirlink config show`: the settings in effect (defaults, YAML files, environment)."""

from __future__ import annotations

import json

import typer

from . import app
from ._utilities import OutputFormat, emit, handle_errors

config_app = typer.Typer(help="Settings (the nirlink namespace of dask.config).\n\nExample: nirlink config show",
                         no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
@handle_errors
def show(changed: bool = typer.Option(False, "--changed", help="Only the settings that differ from their default."),
         output: OutputFormat = typer.Option(OutputFormat.text, "--output", help="text or json.")) -> None:
    """Every nirlink setting with the value in effect, marking those changed from their default,
    invalid values and unknown (misspelt) keys; then where overrides were read from.

    Example: DASK_NIRLINK__INGEST__CHUNK_ROWS=500000 nirlink config show --changed
    """
    from nirlink.engine import _config

    entries = [e for e in _config.effective_settings() if e["changed"] or not changed]
    data = {"settings": entries, "sources": _config.sources()}

    def render(d):
        width = max((len(e["setting"]) for e in d["settings"]), default=10)
        for e in d["settings"]:
            line = f"{e['setting']:<{width}} = {json.dumps(e['value'])}"
            if e["problem"]:
                line += f"   <- {e['problem']}"
            elif e["changed"]:
                line += f"   (default {json.dumps(e['default'])})"
            typer.echo(line)
        src = d["sources"]
        typer.echo(f"YAML files read: {', '.join(src['yaml_files']) or 'none'}")
        typer.echo(f"environment: {', '.join(src['environment']) or 'no DASK_NIRLINK__* variable'}")

    emit(data, output, render)
