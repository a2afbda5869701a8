"""Shared pieces of the command line: the apps, error handling, output helpers.

Exit codes: 0 success; 1 the command ran and found problems (invalid catalogue, jobs
that could not be cancelled, a backend error); 2 usage (bad options, no job database at
the path, unknown job key). Errors are one line on standard error, ``error: ...``; with
``--debug`` the traceback is shown instead. Credentials in URLs and the values of
credential variables are masked in every message.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import click
import typer

from eoextract._util.redact import redact
from eoextract.errors import BackendError, ConfigurationError, EoextractError, JobDatabaseError


EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2

app = typer.Typer(
    name="eoextract",
    help="Large Earth-observation extractions with openEO.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
stac_app = typer.Typer(help="Build and validate STAC catalogues.", no_args_is_help=True)
backend_app = typer.Typer(help="The embedded openEO backend.", no_args_is_help=True)
app.add_typer(stac_app, name="stac")
app.add_typer(backend_app, name="backend")


class _State:
    debug = False


STATE = _State()


def _print_version(value: bool) -> None:
    if value:
        from eoextract import __version__

        typer.echo(f"eoextract {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Log at DEBUG level, show tracebacks.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Large Earth-observation extractions with openEO."""
    STATE.debug = debug
    if debug:  # the traceback of an error is shown: redacted as everything printed
        sys.excepthook = _redacted_excepthook
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("eoextract").setLevel(level)


def _redacted_excepthook(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
    import traceback

    sys.stderr.write(redact("".join(traceback.format_exception(kind, exc, tb))))


class UsageError(EoextractError):
    """The command was called wrongly (exit code 2)."""


def _one_line(text: str, limit: int = 400) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _message(exc: BaseException) -> str:
    if isinstance(exc, BackendError):
        from eoextract.cli._backend_failures import backend_message

        return backend_message(exc)
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (EoextractError, FileNotFoundError)):
        return text
    return f"{type(exc).__name__}: {text}"


def fail(message: str, code: int = EXIT_PROBLEMS) -> NoReturn:
    """Print one ``error:`` line and exit with ``code``."""
    typer.echo(f"error: {redact(_one_line(message))}", err=True)
    raise typer.Exit(code)


F = TypeVar("F", bound=Callable[..., Any])


def command(fn: F) -> F:
    """Run a command with one-line errors (tracebacks only with ``--debug``)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            typer.echo("error: interrupted", err=True)
            raise typer.Exit(130) from None
        except Exception as exc:
            if STATE.debug:
                raise
            code = EXIT_USAGE if isinstance(exc, (UsageError, ConfigurationError)) else EXIT_PROBLEMS
            fail(_message(exc), code)

    return wrapper  # type: ignore[return-value]


def open_db(location: str) -> Any:
    """The existing job database at a path or URL.

    Raises:
        UsageError: Nothing at the path, or not a job database.
    """
    from eoextract.jobs.db import get_job_db

    if "://" not in location:
        _check_db_path(Path(location))
    try:
        db = get_job_db(location)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from exc
    except JobDatabaseError as exc:
        if "not an eoextract job database" in str(exc):
            raise UsageError(str(exc)) from exc
        raise
    if not db.exists():
        raise UsageError(f"{location} holds no jobs table (not a job database yet)")
    return db


#: Files kept beside a CSV or Parquet job database ``<file>``: ``<file><suffix>``.
_DB_SIDECARS = (".history.csv", ".state.csv", ".meta.json")


def _check_db_path(path: Path) -> None:
    """A path that cannot be a job database: nothing there, a folder (the databases in it
    are named), or the sidecar of one (its database is named)."""
    if not path.exists():
        raise UsageError(f"no job database at {path}")
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.is_file() and (
            p.suffix in (".db", ".sqlite", ".sqlite3")
            or p.with_name(p.name + ".meta.json").is_file()))
        hint = f"; job database(s) in it: {', '.join(found[:5])}" if found else ""
        raise UsageError(f"{path} is a folder, not a job database{hint}")
    for suffix in _DB_SIDECARS:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            base = path.with_name(path.name[: -len(suffix)])
            if base.is_file():
                raise UsageError(f"{path} is kept beside the job database {base}; give that instead")


def console(stderr: bool = False) -> Any:
    """A rich console on standard output (wide when not a terminal, so tables keep columns)."""
    from rich.console import Console

    probe = Console(stderr=stderr)
    width = None if probe.is_terminal else 160
    return Console(stderr=stderr, width=width, highlight=False, soft_wrap=False)


DbArg = Annotated[str, typer.Argument(metavar="DB", help="Job database: a path (.db, .csv, .parquet) or a postgresql:// URL.")]

#: A TCP port option: 0 picks a free one.
PORT_RANGE = {"min": 0, "max": 65535}


@contextlib.contextmanager
def listening(host: str, port: int) -> Iterator[None]:
    """Turn "address already in use" while starting a server into one clear error line."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        fail(f"port {port} on {host} is in use (another server?); give another --port "
             "(0 picks a free one)")
