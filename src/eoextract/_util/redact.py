"""Masking of credentials in text shown to users (error lines, reports, logs) and in URLs."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@\s/]+@")
_SECRET_NAMES = re.compile(r"(PASSWORD|SECRET|TOKEN)$", re.IGNORECASE)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with passwords in URLs and the values of credential variables masked.

    Variables whose names end in ``PASSWORD``, ``SECRET`` or ``TOKEN`` count as credentials.
    """
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    env = os.environ if environ is None else environ
    for name, value in env.items():
        if value and len(value) >= 4 and _SECRET_NAMES.search(name) and value in text:
            text = text.replace(value, "***")
    return text


def redact_url(url: str) -> str:
    """A URL without its query string (signed URLs carry credentials there)."""
    parts = urlsplit(url)
    return parts._replace(query="", fragment="").geturl() + ("?..." if parts.query else "")
