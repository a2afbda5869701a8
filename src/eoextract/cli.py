"""The ``eoextract`` command line (thin commands over library calls)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="eoextract",
    help="Large Earth-observation extractions with openEO.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
backend_app = typer.Typer(help="The embedded openEO backend.", no_args_is_help=True)
app.add_typer(backend_app, name="backend")


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Log at DEBUG level, show tracebacks.")] = False,
) -> None:
    """Large Earth-observation extractions with openEO."""
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@backend_app.command("serve")
def backend_serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).")] = 8080,
    data_dir: Annotated[
        Path | None, typer.Option(help="Keep jobs and results here (survives restarts).")
    ] = None,
    workers: Annotated[int, typer.Option(help="Jobs executed at the same time.")] = 2,
    faults: Annotated[bool, typer.Option(help="Enable the fault-injection admin route.")] = False,
    result_style: Annotated[
        str, typer.Option(help="Result metadata style: 'current' or 'cdse'.")
    ] = "current",
) -> None:
    """Run the embedded openEO backend until interrupted; prints its URL."""
    from eoextract.backend.local import serve

    serve(
        host=host,
        port=port,
        data_dir=data_dir,
        workers=workers,
        faults=faults,
        result_style=result_style,
    )


if __name__ == "__main__":  # python -m eoextract.cli
    app()
