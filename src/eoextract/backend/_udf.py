"""User-defined functions (``run_udf``) of the embedded backend.

Python UDFs run with the openeo client's own UDF runtime (``openeo.udf``) in a separate
process, one per execution (job) for all its UDF calls (:mod:`eoextract.backend._udf_child`),
forked from a ``forkserver`` that has the runtime preloaded, with a time limit per call (the
process is killed when it is over) and a memory limit (``RLIMIT_AS``). A failing UDF fails its job with a ``UdfError`` whose traceback goes to
the job logs; the worker and the server go on.

Whether UDFs may run and their limits come from the worker's environment
(:func:`worker_env`, set by the server from ``LocalBackend(allow_udf=..., ...)``).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from typing import Any

import rioxarray  # noqa: F401 - the .rio accessor
import xarray as xr

from eoextract.backend._api_errors import OpenEOApiError, ProcessParameterInvalid, ProcessUnsupported
from eoextract.backend._execution_context import current_context

ENV_ALLOWED = "EOEXTRACT_UDF_ALLOWED"
ENV_TIMEOUT = "EOEXTRACT_UDF_TIMEOUT_S"
ENV_MEMORY = "EOEXTRACT_UDF_MEMORY_MB"
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_MEMORY_MB = 4096

PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
_RUNTIME = "Python"
_VERSIONS = ("3", PYTHON_VERSION)

InvalidRuntime = type("InvalidRuntime", (OpenEOApiError,), {
    "code": "InvalidRuntime", "status": 400, "__doc__": "Unknown UDF runtime (run_udf)."})
InvalidVersion = type("InvalidVersion", (OpenEOApiError,), {
    "code": "InvalidVersion", "status": 400, "__doc__": "Unknown UDF runtime version (run_udf)."})
UdfError = type("UdfError", (OpenEOApiError,), {
    "code": "UdfError", "status": 400,
    "__doc__": "The UDF raised, ran over its time limit or over its memory limit."})


def udf_runtimes() -> dict:
    """The ``GET /udf_runtimes`` document."""
    import openeo

    libraries = {name: {"version": _version(name)} for name in ("numpy", "xarray", "pandas", "scipy")}
    libraries["openeo"] = {"version": openeo.__version__}
    return {_RUNTIME: {
        "title": "Python UDFs (openeo.udf runtime)",
        "description": "Python UDFs run by the openeo client's UDF runtime in a separate process "
                       "with a time and memory limit.",
        "type": "language",
        "default": "3",
        "versions": {v: {"libraries": libraries} for v in _VERSIONS},
    }}


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


def check_udf(udf: Any, runtime: Any, version: Any = None) -> None:
    """Check runtime, version and code of a ``run_udf`` call before running it.

    Raises:
        InvalidRuntime: For a runtime other than Python.
        InvalidVersion: For a version other than ``3`` or the server's ``3.x``.
        ProcessParameterInvalid: For code that is not a string or does not compile.
    """
    if isinstance(runtime, str) and runtime.lower() != _RUNTIME.lower():
        raise InvalidRuntime(f"The UDF runtime {runtime!r} is not supported; available: {_RUNTIME!r}.")
    if version is not None and isinstance(version, str | int | float) and str(version) not in _VERSIONS:
        raise InvalidVersion(f"The UDF runtime version {version!r} of {_RUNTIME} is not supported; "
                             f"available: {', '.join(_VERSIONS)}.")
    if isinstance(udf, str):
        if udf.startswith(("http://", "https://")):
            raise ProcessParameterInvalid("run_udf: UDFs given by URL are not supported here; "
                                          "send the code (openeo.UDF.from_url reads it client-side).")
        try:
            compile(udf, "<udf>", "exec")
        except SyntaxError as exc:
            raise ProcessParameterInvalid(
                f"The value passed for parameter 'udf' in process 'run_udf' is invalid: "
                f"SyntaxError: {exc.msg} (line {exc.lineno}: {(exc.text or '').strip()!r})") from None
    elif udf is not None and not hasattr(udf, "from_parameter"):
        raise ProcessParameterInvalid("run_udf: 'udf' must be the code as a string.")


# --------------------------------------------------------------------------------------------
# Settings (from the worker's environment)


def worker_env(allowed: bool, timeout_s: float = DEFAULT_TIMEOUT_S,
               memory_mb: int = DEFAULT_MEMORY_MB) -> dict[str, str]:
    """Environment variables giving worker processes the UDF settings."""
    return {ENV_ALLOWED: "1" if allowed else "0", ENV_TIMEOUT: str(float(timeout_s)),
            ENV_MEMORY: str(int(memory_mb))}


def _settings() -> tuple[bool, float, int]:
    allowed = os.environ.get(ENV_ALLOWED, "1") not in ("0", "false", "no", "")
    timeout = float(os.environ.get(ENV_TIMEOUT) or DEFAULT_TIMEOUT_S)
    memory = int(os.environ.get(ENV_MEMORY) or DEFAULT_MEMORY_MB)
    return allowed, timeout, memory


# --------------------------------------------------------------------------------------------
# Running


_MP_LOCK = threading.Lock()
_MP_CONTEXT: Any = None


def _mp_context() -> Any:
    global _MP_CONTEXT
    with _MP_LOCK:
        if _MP_CONTEXT is None:
            ctx = multiprocessing.get_context("forkserver")
            # everything a UDF process would otherwise import again, each time: the runtime, and
            # the main module (children import a ``-m`` main module again under __mp_main__)
            preload = ["__main__", "eoextract.backend._udf_child", "eoextract.backend._udf"]
            main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
            if main_spec is not None and main_spec.name:
                preload.append(main_spec.name)
            ctx.set_forkserver_preload(preload)
            _MP_CONTEXT = ctx
        return _MP_CONTEXT


def run_udf(data: Any, udf: str, runtime: str, version: str | None = None,
            context: Any = None) -> xr.DataArray:
    """``run_udf``: run Python UDF code on a raster cube in a separate, limited process."""
    check_udf(udf, runtime, version)
    allowed, timeout_s, memory_mb = _settings()
    if not allowed:
        raise ProcessUnsupported(
            "run_udf is disabled on this backend: it listens on a non-loopback address; start it "
            "with allow_udf=True (--allow-udf) to run user code for its own users.")
    if not isinstance(data, xr.DataArray):
        raise ProcessParameterInvalid(
            "run_udf runs on whole data cubes here: as a process of its own or as the process of "
            "apply_neighborhood, not as the child of apply, apply_dimension or reduce_dimension.")
    return _run_in_child(udf, data, context, timeout_s, memory_mb)


class UdfProcess:
    """The separate process running the UDF calls of one execution (see ``_udf_child``)."""

    def __init__(self, memory_mb: int):
        from eoextract.backend._udf_child import child_main

        mp = _mp_context()
        self.memory_mb = memory_mb
        self.conn, child_conn = mp.Pipe()
        self.proc = mp.Process(target=child_main, args=(child_conn, memory_mb * 1024 * 1024),
                               name="eoextract-udf", daemon=True)
        self.proc.start()  # the first start of a worker also starts the fork server
        child_conn.close()

    def call(self, code: str, data: xr.DataArray, context: Any, timeout_s: float, ctx: Any) -> tuple | None:
        """The answer to one call, or None when the process died (it is then unusable)."""
        t0 = time.monotonic()
        try:
            self.conn.send((code, data, context))
        except (BrokenPipeError, EOFError, OSError):
            return None
        while True:
            if self.conn.poll(0.05):
                try:
                    return self.conn.recv()
                except (EOFError, OSError):
                    return None
            if not self.proc.is_alive() and not self.conn.poll(0):
                return None
            if time.monotonic() - t0 > timeout_s:
                self.close(kill=True)
                ctx.log("error", f"UDF stopped: it did not finish within its time limit of {timeout_s:g} s")
                raise UdfError(f"The UDF did not finish within its time limit of {timeout_s:g} s and "
                               "was stopped.")
            if ctx.cancel_event is not None and ctx.cancel_event.is_set():
                self.close(kill=True)
                ctx.check_canceled()

    def close(self, kill: bool = False) -> None:
        """Stop the process: ask it to exit (it is the fork server's child, which reaps it), or
        kill it (a call over its time limit, a canceled execution)."""
        if kill and self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        elif self.proc.is_alive():
            try:
                self.conn.send(None)
            except (BrokenPipeError, EOFError, OSError):
                self.proc.kill()
        self.conn.close()


def _run_in_child(code: str, data: xr.DataArray, context: Any, timeout_s: float,
                  memory_mb: int) -> xr.DataArray:
    ctx = current_context()
    crs = data.rio.crs if "x" in data.dims and "y" in data.dims else None
    proc = ctx.resources.get("udf_process")
    if proc is None or not proc.proc.is_alive():
        proc = ctx.resources["udf_process"] = UdfProcess(memory_mb)
    t0 = time.monotonic()
    try:
        message = proc.call(code, data, context, timeout_s, ctx)
    except BaseException:
        ctx.resources.pop("udf_process", None)
        raise
    elapsed = time.monotonic() - t0
    if message is None or message[0] == "error":
        ctx.resources.pop("udf_process", None)  # not reused after a failure
        proc.close(kill=True)
    if message is None:
        raise UdfError(f"The UDF process ended without an answer (exit code {proc.proc.exitcode}); "
                       f"it may have been killed for memory (limit {memory_mb} MB).")
    if message[0] == "error":
        _, kind, text, tb = message
        ctx.log("error", f"UDF failed after {elapsed:.2f} s:\n{tb}")
        if kind == "memory":
            raise UdfError(f"The UDF ran out of memory (limit {memory_mb} MB of additional address "
                           f"space): {text}")
        raise UdfError(f"The UDF raised {text} (traceback in the job logs).")
    out = message[1]
    if not isinstance(out, xr.DataArray):
        raise UdfError(f"The UDF returned {type(out).__name__}, not a data cube.")
    if crs is not None and "x" in out.dims and "y" in out.dims and out.rio.crs is None:
        out = out.rio.write_crs(crs)
    ctx.log("debug", f"UDF ran in {elapsed:.2f} s on {dict(data.sizes)}")
    return out
