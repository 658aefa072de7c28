"""Helpers shared by every CLI command: one error exit, JSON or table output, progress.

Exit codes (README, "Exit codes"): 0 success; 1 the command ran and something was wrong (a
job file, an input, a failed job, an unreachable cluster); 2 the command line itself is
wrong (unknown command or option, missing or malformed argument); 130 interrupted. Every
error is printed as ``error: ...`` on stderr - one line, or one line per problem of a job
file - and, with ``--output json``, also as ``{"error": ..., "exit_code": ...}`` on stdout.
Messages never carry a Python class name, and NIRs in them are masked.
"""

from __future__ import annotations

import functools
import json
import os
import select
import sys
import traceback
from collections.abc import Callable
from enum import Enum
from typing import Any

import typer

__all__ = ["OutputFormat", "exit_with_error", "handle_errors", "emit", "state", "stderr_console", "describe_error",
           "EXIT_ERROR", "EXIT_USAGE", "EXIT_INTERRUPTED", "print_error", "click_errors"]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


class _State:
    debug: bool = False


state = _State()


def stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def _mask(text: str) -> str:
    from nirlink.engine.jobs._joblog import mask_nirs

    return mask_nirs(text)


def print_error(message: str, code: int, *, as_json: bool = False) -> None:
    """``error: message`` on stderr (NIRs masked); with ``as_json`` also the JSON error object
    ``{"error", "problems", "exit_code"}`` on stdout."""
    text = _mask(str(message).strip()) or "unknown error"
    typer.echo(f"error: {text}", err=True)
    if as_json:
        lines = text.splitlines()
        problems = [line.strip() for line in lines[1:] if line.strip()]
        payload = {"error": lines[0] if problems else text, "problems": problems, "exit_code": code}
        sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        sys.stdout.flush()


def exit_with_error(message: str, code: int = EXIT_ERROR, *, as_json: bool = False) -> None:
    """Print the error (``print_error``) and exit with ``code``."""
    print_error(message, code, as_json=as_json)
    raise typer.Exit(code)


def describe_error(exc: BaseException) -> str:
    from nirlink.kernels import describe_error as describe

    return describe(exc)


def _warn_unknown_settings() -> None:
    from nirlink.engine import _config

    for path, hint in _config.unknown_settings():
        typer.echo(f"warning: unknown setting {path} is ignored ({hint})", err=True)


def _private_umask() -> int | None:
    """Set the process umask from ``nirlink.privacy.directory-mode`` (so every file and
    directory this command - and the local workers it starts - creates is private); the old
    umask, to restore."""
    from nirlink.engine.io._datasets import private_modes

    try:
        dir_mode, _ = private_modes()
    except Exception:  # noqa: BLE001 - a bad setting is reported when the command reads it
        return None
    return os.umask(0o777 & ~dir_mode)


def click_errors():
    """Typer's click exception module (vendored as ``typer._click`` by recent Typer releases,
    plain ``click`` before): found from ``typer.BadParameter`` so both work."""
    return sys.modules[typer.BadParameter.__module__]


def _is_json(kwargs: dict[str, Any]) -> bool:
    return kwargs.get("output") == OutputFormat.json


def handle_errors(func: Callable | None = None, *, private: bool = True) -> Callable:
    """Turn any exception of a command into an ``error: ...`` message and its exit code.

    ``--debug`` (before the command) prints the traceback too. Multi-line messages (a
    SpecError listing every problem) are printed whole. Before the command runs, unknown
    ``nirlink.*`` settings are warned about and, unless ``private=False`` (a command that
    writes nothing personal, such as TLS certificates), the private umask is set, and the
    Arrow memory pool of this process is the one the settings name (``use_arrow_memory_pool``:
    a command without a cluster runs its Arrow work here).
    """
    if func is None:
        return functools.partial(handle_errors, private=private)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        as_json = _is_json(kwargs)
        old_umask = None
        try:
            _warn_unknown_settings()
            old_umask = _private_umask() if private else None
            from nirlink.cluster import use_arrow_memory_pool

            use_arrow_memory_pool()
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            exit_with_error("interrupted", EXIT_INTERRUPTED, as_json=as_json)
        except BrokenPipeError as exc:
            if not _reader_gone(sys.stdout):
                # another pipe or socket broke (a subprocess, a connection): an error like any
                exit_with_error(describe_error(exc), EXIT_ERROR, as_json=as_json)
            # the reader of the output went away (`nirlink jobs | head -1`): what it read was
            # what it asked for; stop quietly (stdout to /dev/null: the exit's flush would fail)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except Exception as exc:  # noqa: BLE001 - the CLI's single error exit
            if state.debug:
                traceback.print_exc()
            if isinstance(exc, click_errors().UsageError):  # a command's own check of its options
                exit_with_error(exc.message, EXIT_USAGE, as_json=as_json)
            exit_with_error(describe_error(exc), EXIT_ERROR, as_json=as_json)
        finally:
            if old_umask is not None:
                os.umask(old_umask)

    return wrapper


def _reader_gone(stream) -> bool:
    """Whether ``stream`` is a pipe or socket whose reading end is closed (poll reports an error
    or a hang-up on the writing end then); False for anything that cannot be polled."""
    try:
        poll = select.poll()
        poll.register(stream.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0))  # a pipe, a socket
    except (OSError, ValueError, AttributeError):
        return False


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


def scheduler_address(value: str | None) -> str | None:
    """``--scheduler``: a Dask scheduler address (``tcp://HOST:PORT``, ``tls://HOST:PORT`` or
    ``HOST:PORT``), checked before any cluster is opened: a malformed one is a usage error."""
    if value is None:
        return None
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(value)
        if scheme in ("tcp", "tls", "ucx"):
            parse_host_port(location)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a scheduler address (expected tcp://HOST:PORT or "
                                 "tls://HOST:PORT)") from None
    return value
