"""``eoextract backend serve``: the embedded openEO backend."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from eoextract.cli._common import PORT_RANGE, UsageError, backend_app, command, listening


@backend_app.command("serve")
@command
def backend_serve(
    host: Annotated[
        str, typer.Option(help="IP address to listen on; a non-loopback one needs --allow-remote.")
    ] = "127.0.0.1",
    allow_remote: Annotated[
        bool, typer.Option(help="Allow a --host reachable from other machines (it exposes the "
                           "basic-auth users and, with --faults, fault injection).")
    ] = False,
    allow_udf: Annotated[
        bool | None, typer.Option("--allow-udf/--no-udf", help="Run user-defined functions (user "
                                  "code) for the backend's users; default: only on a loopback host.",
                                  show_default=False)
    ] = None,
    udf_timeout: Annotated[float, typer.Option(help="Time limit of one UDF call, seconds.")] = 600.0,
    udf_memory_mb: Annotated[int, typer.Option(help="Memory limit of one UDF call, MB.")] = 4096,
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).", **PORT_RANGE)] = 8080,
    data_dir: Annotated[
        Path | None, typer.Option(help="Keep jobs and results here (survives restarts).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Jobs executed at the same time.")] = 2,
    faults: Annotated[bool, typer.Option(help="Enable the fault-injection admin route.")] = False,
    fault_token: Annotated[
        str | None, typer.Option(help="Bearer token of the fault admin route (or "
                                 "EOEXTRACT_BACKEND_FAULT_TOKEN); generated and printed when "
                                 "not given.", envvar="EOEXTRACT_BACKEND_FAULT_TOKEN",
                                 show_default=False)
    ] = None,
    result_style: Annotated[
        str, typer.Option(help="Result metadata style: 'current' or 'cdse'.")
    ] = "current",
    user: Annotated[str, typer.Option(help="User name for /credentials/basic.")] = "eoextract",
    password: Annotated[
        str, typer.Option(help="Its password (or EOEXTRACT_BACKEND_PASSWORD).",
                          envvar="EOEXTRACT_BACKEND_PASSWORD", show_default=False)
    ] = "eoextract",
    oidc_token_lifetime: Annotated[
        int, typer.Option(help="Lifetime of OIDC access tokens, seconds.")
    ] = 300,
    oidc_device_approval: Annotated[
        str | None, typer.Option(help="'auto' (device codes approved at once) or 'manual' "
                                 "(approved on the issuer's /device page with the user and "
                                 "password); default: auto on loopback hosts, else manual.",
                                 show_default=False)
    ] = None,
    oidc_client_secret: Annotated[
        str | None, typer.Option(help="Secret of the OIDC service client (or "
                                 "EOEXTRACT_BACKEND_OIDC_CLIENT_SECRET); generated and printed "
                                 "when not given.", envvar="EOEXTRACT_BACKEND_OIDC_CLIENT_SECRET",
                                 show_default=False)
    ] = None,
    artifacts: Annotated[
        bool, typer.Option(help="Start a local S3 + STS (moto) for openeo.extra.artifacts.")
    ] = False,
    profile: Annotated[
        str, typer.Option(help="Production profile: 'default' (as before) or 'cdse' (job limits, "
                          "usage and costs, expiring asset URLs, CDSE results documents).")
    ] = "default",
    max_running_jobs: Annotated[
        int | None, typer.Option(help="Per-user running jobs (overrides the profile).",
                                 show_default=False)
    ] = None,
    max_queued_jobs: Annotated[
        int | None, typer.Option(help="Per-user started jobs waiting for a running place "
                                 "(overrides the profile).", show_default=False)
    ] = None,
    asset_url_ttl: Annotated[
        int | None, typer.Option(help="Seconds signed asset URLs stay valid (overrides the "
                                 "profile).", show_default=False)
    ] = None,
    historical_jobs: Annotated[
        int, typer.Option(help="Finished jobs already in the user's job listing.")
    ] = 0,
) -> None:
    """Run the embedded openEO backend until interrupted; prints its URL (then, when generated,
    the fault token and the OIDC service client's id and secret, and with --artifacts the
    S3/STS endpoint)."""
    if profile not in ("default", "cdse"):
        raise UsageError(f"--profile must be 'default' or 'cdse', not {profile!r}")
    if result_style not in ("current", "cdse"):
        raise UsageError(f"--result-style must be 'current' or 'cdse', not {result_style!r}")
    from eoextract.backend import BackendProfile, serve

    overrides = {
        key: value
        for key, value in (("max_running_jobs", max_running_jobs),
                           ("max_queued_jobs", max_queued_jobs),
                           ("asset_url_ttl_s", asset_url_ttl))
        if value is not None
    }

    with listening(host, port):
        serve(
            host=host,
            allow_remote=allow_remote,
            allow_udf=allow_udf,
            udf_timeout_s=udf_timeout,
            udf_memory_mb=udf_memory_mb,
            port=port,
            data_dir=data_dir,
            workers=workers,
            faults=faults,
            fault_token=fault_token,
            result_style=result_style,
            user=user,
            password=password,
            oidc_token_lifetime=oidc_token_lifetime,
            oidc_device_approval=oidc_device_approval,
            oidc_client_secret=oidc_client_secret,
            artifacts=artifacts,
            profile=BackendProfile.named(profile, **overrides),
            historical_jobs=historical_jobs,
        )
