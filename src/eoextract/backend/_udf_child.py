"""The process that runs one user-defined function (UDF) for the embedded backend.

:func:`child_main` runs in a process forked by :mod:`eoextract.backend._udf` (from a
``forkserver`` that has preloaded this module, so numpy, xarray and the openeo client's UDF
runtime are already imported). It receives the input cube over a pipe, limits its own address
space (``RLIMIT_AS``: what it already has plus the memory limit), runs the code with the openeo
client's own UDF runtime (``openeo.udf.run_code.run_udf_code``: ``apply_datacube``,
``apply_timeseries``, ``UdfData`` signatures, the user context) and sends back
``("ok", DataArray)`` or ``("error", kind, message, traceback)``.
"""

from __future__ import annotations

import linecache
import os
import resource
import traceback
from multiprocessing.connection import Connection
from typing import Any

import numpy  # noqa: F401 - preloaded for the UDFs
import pandas  # noqa: F401 - preloaded for the UDFs
import xarray as xr
from openeo.udf import UdfData, XarrayDataCube
from openeo.udf.run_code import run_udf_code

UDF_FILENAME = "<string>"
"""File name of UDF code in tracebacks (``openeo.udf.run_code`` executes it under this name)."""


def _address_space_bytes() -> int:
    """Current virtual memory size of this process (0 when unknown)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return 0


def limit_memory(extra_bytes: int) -> None:
    """Let this process take at most ``extra_bytes`` more address space."""
    if extra_bytes <= 0:
        return
    limit = _address_space_bytes() + extra_bytes
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def run_code(code: str, data: xr.DataArray, context: Any) -> xr.DataArray:
    """Run UDF ``code`` on ``data`` with the openeo client's runtime; return the result cube."""
    # tracebacks show the UDF's own lines
    linecache.cache[UDF_FILENAME] = (len(code), None, code.splitlines(True), UDF_FILENAME)
    udf_data = UdfData(datacube_list=[XarrayDataCube(data)], user_context=context or {})
    result = run_udf_code(code=code, data=udf_data)
    cubes = result.get_datacube_list() or []
    if len(cubes) != 1:
        raise ValueError(f"the UDF must return exactly one data cube, it returned {len(cubes)}")
    return cubes[0].get_array()


def child_main(conn: Connection, code: str, context: Any, memory_bytes: int) -> None:
    """Entry point of the UDF process: receive the cube, run the code, send the result."""
    try:
        data = conn.recv()
        limit_memory(memory_bytes)
        out = run_code(code, data, context)
        del data
        conn.send(("ok", out))
    except MemoryError as exc:
        _send_error(conn, "memory", exc)
    except BaseException as exc:  # noqa: BLE001 - everything the user code raises is reported
        _send_error(conn, "error", exc)
    finally:
        conn.close()
        os._exit(0)


def _send_error(conn: Connection, kind: str, exc: BaseException) -> None:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        conn.send(("error", kind, f"{type(exc).__name__}: {exc}", tb))
    except Exception:  # noqa: BLE001 - e.g. no memory left to pickle: the parent sees the exit
        pass
