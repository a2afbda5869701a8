"""Every log record of eoextract goes out redacted.

:class:`RedactingFilter` replaces a record's message by its formatted, redacted text
(:func:`~eoextract._util.redact.redact`; the arguments are merged in, so nothing unredacted
is left to format later), its exception by the redacted traceback text (``exc_text``;
``exc_info`` is dropped, so no handler can format the exception again) and redacts its
``stack_info``.

A filter on a logger sees only the records logged on that very logger, not those of its
children (``eoextract.jobs.manager`` propagates to the handlers of ``eoextract`` without
passing its filters). :func:`install_log_redaction` therefore attaches the filter to the
``eoextract`` logger *and* wraps the log record factory, so that every record whose logger
is ``eoextract`` or ``eoextract.*`` -- whenever that logger was created -- is redacted as it
is made, before any filter or handler sees it. Records of other loggers are untouched.
``import eoextract`` installs it (once).
"""

from __future__ import annotations

import logging
from typing import Any

from eoextract._util.redact import redact

ROOT = "eoextract"
_DONE = "_eoextract_redacted"
_FORMATTER = logging.Formatter()


def _ours(name: str) -> bool:
    return name == ROOT or name.startswith(ROOT + ".")


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact ``record`` in place (message with its arguments, traceback, stack); idempotent."""
    if getattr(record, _DONE, False):
        return record
    try:
        message = record.getMessage()
    except Exception:  # bad arguments: keep what there is, as text
        message = f"{record.msg} {record.args!r}"
    record.msg, record.args = redact(message), None
    if record.exc_info and record.exc_info[0] is not None:
        if not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        record.exc_info = None
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    setattr(record, _DONE, True)
    return record


class RedactingFilter(logging.Filter):
    """Redacts every record it sees (and lets it pass)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def install_log_redaction() -> None:
    """Redact every record of the ``eoextract`` logger and its children; safe to call again."""
    logger = logging.getLogger(ROOT)
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
    previous = logging.getLogRecordFactory()
    if getattr(previous, _DONE, False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _ours(record.name):
            redact_record(record)
        return record

    setattr(factory, _DONE, True)
    logging.setLogRecordFactory(factory)
