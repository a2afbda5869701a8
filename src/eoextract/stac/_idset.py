"""A compact set of strings (item ids, file paths) for catalogues of millions of items.

Each member is kept as a 64-bit BLAKE2b digest: recent ones in a small Python set, the
rest in one sorted NumPy array, so a million members take about 8 MiB instead of the
~100 MiB of a ``set[str]``. Two different strings share a digest with a probability of
about ``n² / 2⁶⁵`` (3 × 10⁻⁸ for a million), which would make the second look present.
"""

from __future__ import annotations

import hashlib

import numpy as np

#: Digests kept in the Python set before they are merged into the sorted array.
_MERGE_AT = 1 << 16


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"),
                                          digest_size=8).digest(), "little")


class CompactStringSet:
    """A grow-only set of strings with membership tests, ~8 bytes per member."""

    def __init__(self) -> None:
        self._sorted = np.empty(0, dtype=np.uint64)
        self._recent: set[int] = set()

    def __len__(self) -> int:
        return int(self._sorted.size) + len(self._recent)

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and self._has(_digest(text))

    def add(self, text: str) -> bool:
        """Add ``text``; False when it was already there (nothing changes then)."""
        digest = _digest(text)
        if self._has(digest):
            return False
        self._recent.add(digest)
        if len(self._recent) >= _MERGE_AT:
            self._merge()
        return True

    def _has(self, digest: int) -> bool:
        if digest in self._recent:
            return True
        members = self._sorted
        if not members.size:
            return False
        value = np.uint64(digest)
        i = int(members.searchsorted(value))
        return i < members.size and members[i] == value

    def _merge(self) -> None:
        recent = np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))
        self._sorted = np.sort(np.concatenate((self._sorted, recent)))
        self._recent = set()
