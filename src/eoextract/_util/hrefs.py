"""What an href is (a URL or a local path) and which local file it names."""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def is_url(href: str) -> bool:
    """Whether ``href`` is a URL (a scheme of two or more letters; one letter is a drive)."""
    return len(urlsplit(href).scheme) > 1


def is_absolute(href: str) -> bool:
    """Whether ``href`` is not relative: a URL, an absolute path or a Windows drive path."""
    return href.startswith(("/", "\\")) or bool(urlsplit(href).scheme)


def is_local_absolute(href: str) -> bool:
    """Whether ``href`` names a local file absolutely (which breaks when the tree moves)."""
    return href.startswith(("/", "\\", "file:")) or bool(_WINDOWS_DRIVE.match(href))


def local_path(href: str) -> str | None:
    """The local path an href names (``file://`` URLs decoded; relative paths as they are),
    or None for a URL of another scheme."""
    parts = urlsplit(href)
    if parts.scheme == "file":
        return unquote(parts.path)
    if len(parts.scheme) > 1:
        return None
    return href


def resolve_local(href: str, base: str | os.PathLike[str]) -> str | None:
    """The normalised absolute path of a local href, relative ones taken against ``base``;
    None for a URL."""
    path = local_path(href)
    if path is None:
        return None
    return os.path.normpath(os.path.join(base, path))
