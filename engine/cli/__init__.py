"""The `nirlink` command line. One module per command group; heavy imports inside commands."""

from __future__ import annotations

import typer

from ._utilities import state

app = typer.Typer(
    name="nirlink",
    help="nirlink: link career and resource records to the identity register, aggregate them per person.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Print tracebacks on errors.")) -> None:
    state.debug = debug


def _register() -> None:
    from . import aggregate, cluster, explain, job, link, run, status, synth  # noqa: F401  (commands register themselves on `app`)


_register()


def main() -> None:
    app()


__all__ = ["app", "main"]
