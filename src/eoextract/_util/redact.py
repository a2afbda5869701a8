"""The one masking of credentials in every text that is stored, logged or shown.

:func:`redact` takes free text (an error message, a log line with its traceback, a report
cell, a URL) and masks, wherever they appear in it:

- the values of URL query strings and fragments, with or without the URL's scheme and host
  (the ``url: /path?X-Amz-Signature=...`` that ``requests`` repeats inside its errors
  included): signed URLs of S3 (``X-Amz-*``), GCS (``X-Goog-*``, ``GoogleAccessId``,
  ``Signature``), Azure SAS (``sig``, ``se``, ``sv``, ``sp``, ...) and openEO backends;
- the signature segments of openEO result paths (``/jobs/<id>/results/<...>/<file>``: every
  segment between ``results/`` and the file name but ``assets`` and ``items``);
- passwords in URLs (``user:***@``) and user names that look like tokens;
- ``Authorization`` header values, ``Bearer``/``Basic`` credentials, ``key=value`` and
  ``"key": "value"`` pairs whose key names a credential (``password``, ``secret``, ``token``,
  ``signature``, ``credential``, ``api_key``, ``access_key``, ...);
- JSON web tokens, AWS access key ids and 40-character secret keys, GitHub and Google API
  tokens;
- the values of environment variables whose names end in ``PASSWORD``, ``PASSWD``,
  ``SECRET``, ``TOKEN`` (values of at least 4 characters), ``_KEY`` or ``CREDENTIALS``
  (at least 12 characters).

It is idempotent (``redact(redact(t)) == redact(t)``) and cheap (a few regular expression
scans). For data that must stay usable (catalogue hrefs, manifests, publish results),
``queries="credentials"`` masks only the query parameters that carry credentials, and
:func:`redact_data` applies that to every string of a JSON-like structure.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson

#: What a masked credential is replaced with.
MASK = "***"

_SLASH = r"\\?/"  # JSON writers may escape "/" as "\/"
_USERINFO = re.compile(
    r"(?P<pre>[A-Za-z][A-Za-z0-9+.-]*:" + _SLASH + _SLASH + r")"
    r"(?P<user>[^\s/\\@:\"'<>?#]*)(?::(?P<pw>[^\s/\\\"'<>?#]*))?@"
)
# a query string (or fragment) attached to anything: values end at white space, quotes,
# brackets or a backslash that does not escape a slash
_QUERY = re.compile(r"(?P<mark>[?#])(?P<q>(?:[^\s\"'<>\\)\]}]|\\/)+)")
_OPENEO_RESULTS = re.compile(
    r"(?P<pre>" + _SLASH + r"jobs" + _SLASH + r"[^/\\\s?#\"'<>]+" + _SLASH + r"results" + _SLASH + r")"
    r"(?P<segs>(?:[^/\\\s?#\"'<>]+" + _SLASH + r")+)"
)
_SEGMENT = re.compile(r"[^/\\]+")
_AUTH_HEADER = re.compile(
    r"(?i)(?P<pre>\bauthori[sz]ation[\"']?\s*[:=]\s*[\"']?"
    r"(?:(?:bearer|basic|token|digest|negotiate|aws4-hmac-sha256)\s+)?)"
    r"(?P<val>[^\s\"',}\]]+)"
)
_SCHEME_TOKEN = re.compile(r"(?i)\b(?P<pre>(?:bearer|basic)\s+)(?P<val>[A-Za-z0-9._~+/=-]+)")
_KEYWORDS = (r"password|passwd|secret|token|signature|sig|credential|api[_-]?key|apikey"
             r"|access[_-]?key|private[_-]?key|session[_-]?key|googleaccessid|awsaccesskeyid")
# a credential's name: the keyword alone, after a separator or a camel-case step
# ("X-Amz-Signature", "aws_secret_access_key", "accessToken"), maybe with a suffix
_KEY = (r"(?:[\w.-]*?(?:[_.-]|(?<=[a-z0-9])(?=[A-Z])))?(?i:" + _KEYWORDS + r")"
        r"(?:s\b|[_.-][\w.-]*|[A-Z][\w-]*)?")
_KEY_NAME = re.compile(r"^" + _KEY + r"$")
# the pair is found from the keyword on (the name's prefix, e.g. "X-Amz-", stays as it is)
_KEY_VALUE = re.compile(
    r"(?:(?<=[_.-])|(?<![\w.-])|(?<=[a-z0-9])(?=[A-Z]))"
    r"(?P<key>(?i:" + _KEYWORDS + r")(?:s\b|[_.-][\w.-]*|[A-Z][\w-]*)?)"
    r"(?P<sep>[\"']?\s*(?P<op>[:=])\s*)"
    r"(?P<val>\"[^\"]*\"|'[^']*'|(?:[^\s\"'&,;)}\]\\]|\\/)+)"
)
_TOKENS = re.compile(
    r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"  # JSON web token
    r"|\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"  # AWS access key id
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}\b"  # GitHub token
    r"|\bAIza[0-9A-Za-z_-]{35}\b"  # Google API key
)
_TOKEN_PREFIXES = re.compile(r"eyJ|AKIA|ASIA|gh[pousr]_|AIza")
_LONG_RUN = re.compile(r"[A-Za-z0-9/+]{40,}=*")  # maybe an AWS secret key (see _aws_secret)
#: Query parameters that carry credentials (``queries="credentials"``), lower case.
_CREDENTIAL_PARAMS = re.compile(
    r"(?i)^(?:x-amz-.*|x-goog-.*|signature|googleaccessid|awsaccesskeyid|policy|key-pair-id"
    r"|sig|se|sv|sp|st|sr|ss|srt|spr|sdd|skoid|sktid|skt|ske|sks|skv|saoid|suoid|scid"
    r"|key|code|access_token|refresh_token|id_token)$"
)


def _looks_secret(token: str) -> bool:
    """Whether a bare word looks like a generated credential rather than a word."""
    if len(token) < 8 or token == MASK:
        return False
    if any(c in token for c in "+/=") or (any(c.isdigit() for c in token)
                                          and any(c.isalpha() for c in token)):
        return True
    rest = token[1:]
    return any(c.isupper() for c in rest) and any(c.islower() for c in rest)


def _mask_query(query: str, everything: bool) -> str:
    parts = re.split(r"([&;])", query)
    for i in range(0, len(parts), 2):
        name, eq, value = parts[i].partition("=")
        if eq:
            if value and (everything or _CREDENTIAL_PARAMS.match(name) or _KEY_NAME.match(name)):
                parts[i] = f"{name}={MASK}"
        elif everything and _looks_secret(name):
            parts[i] = MASK
    return "".join(parts)


def _userinfo(m: re.Match[str]) -> str:
    if m["pw"] is not None:
        return f"{m['pre']}{m['user']}:{MASK}@"
    return f"{m['pre']}{MASK}@" if _looks_secret(m["user"]) else m[0]


def _openeo_segments(m: re.Match[str]) -> str:
    segs = _SEGMENT.sub(lambda s: s[0] if s[0] in ("assets", "items") else MASK, m["segs"])
    return m["pre"] + segs


def _key_value(m: re.Match[str]) -> str:
    value = m["val"]
    quote = value[0] if value[:1] in ("'", '"') else ""
    inner = value[1:-1] if quote else value
    if not inner or inner == MASK:
        return m[0]
    if m["op"] == ":" and not quote and not _looks_secret(inner):
        return m[0]  # prose ("wrong password: try again"), not a credential
    return f"{m['key']}{m['sep']}{quote}{MASK}{quote}"


def _aws_secret(m: re.Match[str]) -> str:
    candidate = m[0]
    # a 40-character AWS secret key: mixed case and digits, seldom many slashes (paths)
    if (len(candidate) == 40 and candidate[0] != "/" and candidate[-1] != "/"
            and candidate.count("/") <= 2 and any(c.isupper() for c in candidate)
            and any(c.islower() for c in candidate) and any(c.isdigit() for c in candidate)):
        return MASK
    return candidate


def _scheme_token(m: re.Match[str]) -> str:
    return f"{m['pre']}{MASK}" if _looks_secret(m["val"]) else m[0]


_KEYWORD_HINTS = re.compile(r"passw|secret|token|sig|credential|key|accessid")
_ENV_SUFFIXES = ("PASSWORD", "PASSWD", "SECRET", "TOKEN")
_ENV_KEY_SUFFIXES = ("_KEY", "CREDENTIAL", "CREDENTIALS")  # also names of ordinary settings


def _env_secrets(environ: Mapping[str, str]) -> list[str]:
    """Values of credential variables: at least 4 characters, or 12 for ``*_KEY`` and
    ``*CREDENTIALS`` (``SORT_KEY=name`` must not mask every "name")."""
    found = []
    for name in environ:
        upper = name.upper()
        shortest = 4 if upper.endswith(_ENV_SUFFIXES) else 12 if upper.endswith(_ENV_KEY_SUFFIXES) else 0
        if shortest and len(value := environ.get(name) or "") >= shortest and value != MASK:
            found.append(value)
    return found


_env_cache: tuple[dict[Any, Any], list[str]] | None = None


def _process_env_secrets() -> list[str]:
    """:func:`_env_secrets` of ``os.environ``, computed again only when it has changed."""
    global _env_cache
    data = getattr(os.environ, "_data", None)
    if not isinstance(data, dict):
        return _env_secrets(os.environ)
    cached = _env_cache
    if cached is not None and cached[0] == data:
        return cached[1]
    secrets = _env_secrets(os.environ)
    _env_cache = (dict(data), secrets)
    return secrets


def _once(text: str, everything: bool, secrets: Sequence[str]) -> str:
    # each scan runs only when a cheap look says it can match (most texts hold nothing)
    low = text.lower()
    if "/" in text:
        if "@" in text:
            text = _USERINFO.sub(_userinfo, text)
        if "results" in low:
            text = _OPENEO_RESULTS.sub(_openeo_segments, text)
    if "?" in text or "#" in text:
        text = _QUERY.sub(lambda m: m["mark"] + _mask_query(m["q"], everything), text)
    if "authori" in low:
        text = _AUTH_HEADER.sub(lambda m: m["pre"] + MASK if m["val"] != MASK else m[0], text)
    if "bearer" in low or "basic" in low:
        text = _SCHEME_TOKEN.sub(_scheme_token, text)
    if ("=" in text or ":" in text) and _KEYWORD_HINTS.search(low):
        text = _KEY_VALUE.sub(_key_value, text)
    if _TOKEN_PREFIXES.search(text):
        text = _TOKENS.sub(MASK, text)
    if len(text) >= 40 and _LONG_RUN.search(text):
        text = _LONG_RUN.sub(_aws_secret, text)
    for value in secrets:
        if value in text:
            text = text.replace(value, MASK)
    return text


def redact(text: object, environ: Mapping[str, str] | None = None, *,
           queries: Literal["all", "credentials"] = "all") -> str:
    """``text`` with every credential masked (see the module's description).

    Args:
        text: free text (anything else is turned into text first).
        environ: the environment whose credential variables are masked (default
            ``os.environ``).
        queries: ``"all"`` masks every value of every query string (free text: errors,
            logs, reports); ``"credentials"`` only those of parameters that carry
            credentials (data that must stay usable, such as catalogue hrefs).
    """
    text = text if isinstance(text, str) else str(text)
    secrets = _process_env_secrets() if environ is None else _env_secrets(environ)
    if len(text) <= _CACHED_UP_TO:
        return _settled_cached(text, queries == "all", tuple(secrets))
    return _settled(text, queries == "all", secrets)


def _settled(text: str, everything: bool, secrets: Sequence[str]) -> str:
    for _ in range(4):  # a mask may reveal another match (e.g. a shortened value): settle
        out = _once(text, everything, secrets)
        if out == text:
            break
        text = out
    return text


# short texts repeat (band names, media types, roles, extension URLs in every item)
_CACHED_UP_TO = 300
_settled_cached = functools.lru_cache(maxsize=8192)(_settled)


def redact_data(value: Any, environ: Mapping[str, str] | None = None) -> Any:
    """A copy of a JSON-like value (dicts, lists, strings) with credentials masked.

    Strings are redacted with ``queries="credentials"`` (hrefs keep their ordinary query
    parameters); a string under a key that names a credential (``"password"``,
    ``"access_token"``, ...) is masked whole. Other values are returned as they are; a
    dict with nothing to mask is returned itself (not copied).
    """
    secrets = tuple(_process_env_secrets() if environ is None else _env_secrets(environ))
    if type(value) is dict and not _may_hold_credentials(value, secrets):
        return value  # the common case, decided on the serialised document at C speed

    def text(s: str) -> str:
        if len(s) <= _CACHED_UP_TO:
            return _settled_cached(s, False, secrets)
        return _settled(s, False, secrets)

    def walk(v: Any) -> Any:
        kind = type(v)
        if kind in _SCALARS:
            return v
        if kind is str:
            return text(v)
        if kind is list:
            return [w if type(w) in _SCALARS else walk(w) for w in v]
        if isinstance(v, str):
            return text(v)
        if isinstance(v, Mapping):
            return {k: MASK if (isinstance(w, str) and w and isinstance(k, str) and _names_credential(k))
                    else walk(w) for k, w in v.items()}
        if isinstance(v, list | tuple):
            return type(v)(walk(w) for w in v)
        return v

    return walk(value)


_SCALARS = frozenset({int, float, bool, type(None)})
_DATA_HINTS = (b"@", b"?", b"#", b"/results/", b"passw", b"secret", b"token", b"sig", b"credential",
               b"key", b"accessid", b"authori", b"bearer", b"basic")
_DATA_TOKENS = re.compile(rb"eyJ|AKIA|ASIA|gh[pousr]_|AIza")


def _may_hold_credentials(document: dict[str, Any], secrets: Sequence[str]) -> bool:
    """Whether a document has anything :func:`redact_data` could mask (bare 40-character
    AWS secret keys aside: in data, they are found under their key names)."""
    try:
        blob = orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return True
    low = blob.lower()
    return (any(h in low for h in _DATA_HINTS) or _DATA_TOKENS.search(blob) is not None
            or any(v.encode() in blob for v in secrets))


@functools.lru_cache(maxsize=4096)
def _names_credential(key: str) -> bool:
    return _KEY_NAME.match(key) is not None


def redact_url(url: str) -> str:
    """A URL without its query string (signed URLs carry credentials there)."""
    parts = urlsplit(url)
    return redact(parts._replace(query="", fragment="").geturl() + ("?..." if parts.query else ""),
                  environ={})
