"""Content checksums, written as STAC ``file:checksum`` multihashes.

A checksum is kept everywhere as the lower-case hex multihash the STAC file extension
uses: the hash function's code and the digest length, then the digest, e.g.
``"1220" + sha256`` or ``"1e20" + blake3``. Files whose backend announced no checksum
(CDSE's results carry none) are hashed with SHA-256 (:data:`DEFAULT_ALGORITHM`), the hash
every STAC reader and object store knows; BLAKE3, several times faster, can be asked for
instead (a download's ``checksum_algorithm="blake3"``). An announced checksum is verified
with its own hash function.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import blake3


class Hasher(Protocol):
    """An incremental hash (``hashlib``'s interface)."""

    def update(self, data: bytes, /) -> Any: ...

    def hexdigest(self) -> str: ...


#: Hash functions understood, by multihash name: (multihash prefix in hex, factory).
ALGORITHMS: dict[str, tuple[str, Callable[[], Hasher]]] = {
    "blake3": ("1e20", blake3.blake3),
    "sha2-256": ("1220", hashlib.sha256),
    "sha2-512": ("1340", hashlib.sha512),
    "sha1": ("1114", hashlib.sha1),
    "md5": ("d50110", lambda: hashlib.md5(usedforsecurity=False)),
}

#: What files are hashed with when no checksum was announced for them.
DEFAULT_ALGORITHM = "sha2-256"

_PREFIXES = {prefix: name for name, (prefix, _) in ALGORITHMS.items()}
_HEX_RE = re.compile(r"[0-9a-f]+")


def new_hasher(algorithm: str = DEFAULT_ALGORITHM) -> Hasher:
    """A fresh incremental hash for a multihash name (``"blake3"``, ``"sha2-256"``, ...)."""
    try:
        return ALGORITHMS[algorithm][1]()
    except KeyError:
        raise ValueError(f"unknown checksum algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}") from None


def multihash(algorithm: str, hexdigest: str) -> str:
    """The hex multihash of a digest, as written in ``file:checksum``."""
    return ALGORITHMS[algorithm][0] + hexdigest.lower()


def parse_checksum(value: Any) -> tuple[str, str] | None:
    """``(algorithm, hex digest)`` of a ``file:checksum`` value, or None when it is not
    a well-formed multihash of a known hash function."""
    if not isinstance(value, str):
        return None
    value = value.strip().lower()
    for prefix, name in _PREFIXES.items():
        if value.startswith(prefix):
            digest = value[len(prefix):]
            # the prefix ends with the digest's length in bytes
            if len(digest) == 2 * int(prefix[-2:], 16) and _HEX_RE.fullmatch(digest):
                return name, digest
    return None


def normalized_checksum(value: Any) -> str | None:
    """A ``file:checksum`` value as eoextract keeps it (lower-case hex multihash), or None
    when it is not a well-formed multihash of a known hash function."""
    parsed = parse_checksum(value)
    return multihash(*parsed) if parsed is not None else None


def algorithm_of(checksum: str | None) -> str:
    """The hash function of a multihash, or :data:`DEFAULT_ALGORITHM` for None."""
    if checksum is None:
        return DEFAULT_ALGORITHM
    parsed = parse_checksum(checksum)
    if parsed is None:
        raise ValueError(f"not a known multihash: {checksum!r}")
    return parsed[0]


def file_checksum(path: Path | str, algorithm: str = DEFAULT_ALGORITHM,
                  chunk_size: int = 1 << 20) -> tuple[str, int]:
    """``(multihash, size in bytes)`` of a file's content."""
    hasher = new_hasher(algorithm)
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk_size):
            hasher.update(block)
            size += len(block)
    return multihash(algorithm, hasher.hexdigest()), size
