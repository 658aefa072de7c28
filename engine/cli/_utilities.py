"""Helpers shared by every CLI command: one error exit, JSON or table output, progress."""

from __future__ import annotations

import functools
import json
import sys
import traceback
from collections.abc import Callable
from enum import Enum
from typing import Any

import typer

__all__ = ["OutputFormat", "exit_with_error", "handle_errors", "emit", "state", "stderr_console"]


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


class _State:
    debug: bool = False


state = _State()


def stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def exit_with_error(message: str, code: int = 1) -> None:
    """Print ``error: message`` on one line to stderr and exit with ``code``."""
    first = str(message).strip()
    typer.echo(f"error: {first}", err=True)
    raise typer.Exit(code)


def handle_errors(func: Callable) -> Callable:
    """Turn any exception of a command into a one-line message and exit code 1.

    ``--debug`` (before the command) prints the traceback instead. Multi-line messages
    (a SpecError listing every problem) are printed whole.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            exit_with_error("interrupted", code=130)
        except Exception as exc:  # noqa: BLE001 - the CLI's single error exit
            if state.debug:
                traceback.print_exc()
            name = type(exc).__name__
            from nirlink.kernels import NirlinkError

            # our errors may list several problems (one per line); anything else: its first line
            text = str(exc) if isinstance(exc, NirlinkError) else f"{name}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            exit_with_error(text)

    return wrapper


def _default(obj: Any):
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def emit(data: Any, output: OutputFormat, render: Callable[[Any], None] | None = None) -> None:
    """Print ``data`` as JSON (``--output json``) or through ``render`` (text)."""
    if output == OutputFormat.json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=_default) + "\n")
    elif render is not None:
        render(data)
    else:
        sys.stdout.write(json.dumps(data, indent=2, default=_default) + "\n")
