"""The process that runs the user-defined functions (UDFs) of one execution.

:func:`child_main` runs in a process forked by :mod:`eoextract.backend._udf` (from a
``forkserver`` that has preloaded this module, so numpy, xarray, scipy and the openeo client's
UDF runtime are already imported). It limits its own address space (``RLIMIT_AS``: what it
already has plus the memory limit), then answers calls ``(code, cube, context)`` received over
a pipe, one at a time, until it receives None: it runs the code with the openeo client's own UDF
runtime (``openeo.udf.run_code.run_udf_code``: ``apply_datacube``, ``apply_timeseries``,
``UdfData`` signatures, the user context) and sends back ``("ok", DataArray)`` or
``("error", kind, message, traceback)``. One execution (job) uses one such process for all its
UDF calls; it never serves another execution.
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

try:  # common in UDFs: imported once in the fork server instead of in every UDF process
    import scipy.ndimage  # noqa: F401
    import scipy.signal  # noqa: F401
except ImportError:  # pragma: no cover
    pass

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


def child_main(conn: Connection, memory_bytes: int) -> None:
    """Entry point of the UDF process: answer ``(code, cube, context)`` calls until None."""
    try:
        limit_memory(memory_bytes)
        while (call := conn.recv()) is not None:
            code, data, context = call
            try:
                out = run_code(code, data, context)
                del data
                conn.send(("ok", out))
            except MemoryError as exc:
                _send_error(conn, "memory", exc)
            except BaseException as exc:  # noqa: BLE001 - everything the user code raises
                _send_error(conn, "error", exc)
            call = data = out = None  # free the cube before waiting for the next call
    except (EOFError, OSError, KeyboardInterrupt):
        pass
    finally:
        conn.close()
        os._exit(0)


def _send_error(conn: Connection, kind: str, exc: BaseException) -> None:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        conn.send(("error", kind, f"{type(exc).__name__}: {exc}", tb))
    except Exception:  # noqa: BLE001 - e.g. no memory left to pickle: the parent sees the exit
        pass
