"""``eoextract report``: the HTML run report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from eoextract.cli._common import PORT_RANGE, DbArg, UsageError, app, command, console, listening, open_db


@app.command("report")
@command
def report(
    db: DbArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] = Path("report.html"),
    output_dir: Annotated[Path | None, typer.Option(help="The extraction's output folder (map of item footprints).")] = None,
    title: Annotated[str | None, typer.Option(help="Page title.")] = None,
    pngs: Annotated[bool, typer.Option(help="Also write the plots as PNGs into <output stem>_files/.")] = True,
    parents: Annotated[bool, typer.Option("--parents", "-p", help="Create the folder of --output (and its parents) when missing.")] = False,
) -> None:
    """Write a self-contained HTML report: timeline per backend, status counts over time,
    durations and costs, failures by class, map of item footprints. The folder of
    --output must exist, unless --parents is given."""
    if output.exists() and output.is_dir():
        raise UsageError(f"--output {output} is a folder; give the HTML file's path")
    folder = output.parent
    if not folder.is_dir():
        if folder.exists():
            raise UsageError(f"cannot write {output}: {folder} is not a folder")
        if not parents:
            raise UsageError(f"cannot write {output}: no folder {folder} (create it, or give --parents)")
    database = open_db(db)
    if output_dir is not None and not output_dir.is_dir():
        raise UsageError(f"no folder {output_dir}")
    from eoextract.report._html import write_report

    if parents:
        folder.mkdir(parents=True, exist_ok=True)
    path = write_report(database, output, output_dir=output_dir, title=title, write_pngs=pngs)
    console().print(f"wrote {path}")


@app.command("serve-status")
@command
def serve_status(
    db: DbArg,
    host: Annotated[str, typer.Option(help="Address to listen on; one reachable from other machines needs --allow-remote.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).", **PORT_RANGE)] = 8090,
    interval: Annotated[float, typer.Option(help="Seconds between two refreshes of the page.")] = 2.0,
    allow_remote: Annotated[bool, typer.Option(help="Allow a --host reachable from other machines (the page shows job keys and error messages).")] = False,
) -> None:
    """Serve a live, read-only status page of a run (counts per status and backend, slots
    against learned job limits, credits, throughput and ETA, latest failures, a map of the
    jobs) until interrupted; prints its URL."""
    import ipaddress

    open_db(db).close()  # a clear error for a wrong path before listening
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise UsageError(f"--host must be an IP address or localhost, not {host!r}") from None
    if not loopback and not allow_remote:
        raise UsageError(f"--host {host} is reachable from other machines; add --allow-remote to serve there")
    from eoextract.report._live import StatusServer

    with listening(host, port):
        server = StatusServer(db, host=host, port=port, interval_s=interval)
    console().print(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
