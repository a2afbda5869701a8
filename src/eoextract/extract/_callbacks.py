"""The user callbacks of an extraction, checked up front: how each one will be called.

* ``create_datacube_fn(row, connection, provider=None, connection_provider=None)``, called
  with those keywords it declares (:func:`check_start_job`);
* ``post_job_action`` in openeo-gfmap's form ``(job_items, row, parameters)`` or in ESA
  WorldCereal's ``(job_items, row)`` (:func:`post_job_action_arity`). WorldCereal binds its
  own settings with ``functools.partial(action, extract_value=1, ...)``, which leaves two
  positional parameters.

The ``output_path_generator`` forms are checked by
:class:`~eoextract.extract._placement.OutputPathGenerator`.
"""

from __future__ import annotations

import inspect
from typing import Any

from eoextract.errors import ConfigurationError
from eoextract.extract._placement import check_signature

#: Parameters ``post_job_action`` is called with, positionally (openeo-gfmap's form).
POST_JOB_PARAMETERS = ("job_items", "row", "parameters")
#: WorldCereal's form of ``post_job_action``: no parameters dict.
POST_JOB_PARAMETERS_SHORT = ("job_items", "row")
#: Keyword arguments the manager passes to ``create_datacube_fn`` (those it declares).
START_JOB_KEYWORDS = ("row", "connection", "connection_provider", "provider")


def check_start_job(fn: Any) -> None:
    """Check ``create_datacube_fn`` can be called as the manager calls it.

    Raises:
        ConfigurationError: Not callable, or without parameters ``row`` and ``connection``.
    """
    name = "create_datacube_fn"
    if not callable(fn):
        raise ConfigurationError(f"{name} must be a function like {name}(row, connection, provider=None, "
                                 f"connection_provider=None), got {type(fn).__name__}")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        passed = list(START_JOB_KEYWORDS)
    else:
        passed = [k for k in START_JOB_KEYWORDS if k in params]
    missing = [k for k in ("row", "connection") if k not in passed]
    if missing:
        label = getattr(fn, "__qualname__", repr(fn))
        raise ConfigurationError(
            f"{name} {label}{inspect.signature(fn)} must take parameters named 'row' and 'connection' "
            f"(it is called as {name}(row=..., connection=..., provider=..., connection_provider=...), "
            f"with those of them it declares); missing: {', '.join(missing)}"
        )
    check_signature(fn, (), name=name, keywords=passed)


def post_job_action_arity(fn: Any) -> int:
    """How many positional arguments ``post_job_action`` takes: 3 for
    ``(job_items, row, parameters)``, 2 for ``(job_items, row)``.

    A callback that can take both (e.g. ``(job_items, row, parameters=None)``) gets three.

    Raises:
        ConfigurationError: It takes neither form; the message names both.
    """
    try:
        check_signature(fn, POST_JOB_PARAMETERS, name="post_job_action")
        return 3
    except ConfigurationError as long_form:
        try:
            check_signature(fn, POST_JOB_PARAMETERS_SHORT, name="post_job_action")
        except ConfigurationError:
            raise ConfigurationError(
                f"{long_form}; post_job_action must take (job_items, row, parameters) or "
                f"(job_items, row) positionally (further parameters need defaults)") from None
        return 2
