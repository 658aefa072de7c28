"""The `nirlink` command line. One module per command group; heavy imports inside commands."""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from ._utilities import EXIT_INTERRUPTED, EXIT_USAGE, click_errors, print_error, state


def _wants_json(args: list[str]) -> bool:
    return any(a == "--output=json" or (a == "--output" and i + 1 < len(args) and args[i + 1] == "json")
               for i, a in enumerate(args))


class _Nirlink(TyperGroup):
    """The root command: a usage error (unknown option, missing argument, bad value) is one
    line ``error: ... (see 'nirlink X --help')`` and exit code 2, not click's usage block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        args = list(sys.argv[1:] if args is None else args)
        click = click_errors()
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # `nirlink` or `nirlink job` alone: the help
                exc.show()
                sys.exit(EXIT_USAGE)
            where = exc.ctx.command_path if exc.ctx is not None else "nirlink"
            message = " ".join(exc.format_message().split())
            message = message[:1].lower() + message[1:].rstrip(".")
            print_error(f"{message} (see '{where} --help')", EXIT_USAGE, as_json=_wants_json(args))
            sys.exit(EXIT_USAGE)
        except (typer.Abort, getattr(click, "Abort", typer.Abort)):
            print_error("interrupted", EXIT_INTERRUPTED, as_json=_wants_json(args))
            sys.exit(EXIT_INTERRUPTED)
        except click.ClickException as exc:
            print_error(" ".join(exc.format_message().split()), exc.exit_code, as_json=_wants_json(args))
            sys.exit(exc.exit_code)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    name="nirlink",
    cls=_Nirlink,
    help="nirlink: link career and resource records to the identity register, aggregate them per person.\n\n"
         "Example: nirlink run job.toml",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from nirlink import version

        typer.echo(f"nirlink {version()}")
        raise typer.Exit()


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Print tracebacks on errors."),
          version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print nirlink's version and exit.")) -> None:
    state.debug = debug


def _register() -> None:
    from . import (  # noqa: F401  (commands register themselves on `app`)
        aggregate,
        cluster,
        config,
        explain,
        job,
        link,
        model,
        run,
        status,
        synth,
    )


_register()


def main() -> None:
    app()


__all__ = ["app", "main"]
