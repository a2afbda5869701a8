"""What an href is (a URL or a local path), which local file it names, and whether a path
stays inside a folder."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from eoextract.errors import UnsafeAssetPath

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


def ensure_inside(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> Path:
    """Resolve ``path`` (relative paths are taken relative to ``root``) and check it
    stays inside ``root``.

    Symbolic links are followed, so a link to a folder outside ``root`` is refused.

    Args:
        path: The candidate path.
        root: The folder that must contain it.

    Returns:
        The resolved absolute path.

    Raises:
        UnsafeAssetPath: If the path contains ``..`` or NUL, or resolves outside ``root``
            (or is ``root`` itself).
    """
    raw = os.fspath(path)
    if "\x00" in raw:
        raise UnsafeAssetPath(f"Path {raw!r} contains NUL")
    candidate = Path(raw)
    if ".." in candidate.parts:
        raise UnsafeAssetPath(f"Path {raw!r} contains '..'")
    root_resolved = Path(root).resolve()
    if not candidate.is_absolute():
        candidate = root_resolved / candidate
    resolved = candidate.resolve()
    if resolved == root_resolved or not resolved.is_relative_to(root_resolved):
        raise UnsafeAssetPath(f"Path {raw!r} resolves to {resolved}, outside of {root_resolved}")
    return resolved
