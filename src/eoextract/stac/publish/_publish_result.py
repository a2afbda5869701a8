"""What a publication did (:class:`PublishResult`), and the error raised when it failed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, SupportsIndex

from eoextract._util.redact import redact
from eoextract.errors import StacError


class PublishError(StacError):
    """Publishing failed or was incomplete (``.result`` holds what was done); the message
    is redacted."""

    def __init__(self, message: str, *, result: PublishResult | None = None) -> None:
        super().__init__(redact(message))
        self.result = result


class _Messages(list[str]):
    """A list of messages that redacts what is put into it."""

    def __init__(self, messages: Iterable[str] = ()) -> None:
        super().__init__(redact(m) for m in messages)

    def append(self, message: str) -> None:
        super().append(redact(message))

    def extend(self, messages: Iterable[str]) -> None:
        super().extend(redact(m) for m in messages)

    def insert(self, index: SupportsIndex, message: str) -> None:
        super().insert(index, redact(message))

    def __iadd__(self, messages: Iterable[str]) -> _Messages:  # type: ignore[override]
        self.extend(messages)
        return self

    def __setitem__(self, index: Any, value: Any) -> None:
        super().__setitem__(index, [redact(v) for v in value] if isinstance(index, slice)
                            else redact(value))


@dataclass
class PublishResult:
    """What one publication did.

    ``published_items`` and ``failed_items`` say which items got there and which did not,
    so that a caller can record what was published where (an extraction marks the jobs
    that produced them, see ``eoextract.extract.publish_catalogue``).

    ``target``, ``root_url`` and ``errors`` are redacted whenever they are set (no password,
    token or signed query in them, whatever the publisher put there).

    Attributes:
        target: Where to (without credentials), e.g. ``s3://bucket/prefix``.
        n_items: Items in the catalogue.
        n_written: Objects written (files uploaded, items loaded).
        n_unchanged: Objects found up to date and left alone (incremental runs).
        n_bytes: Bytes uploaded.
        elapsed_s: Wall-clock seconds.
        published_items: Ids of the items that are published after this run.
        failed_items: Ids of the items that could not be published.
        errors: One message per object that failed; empty when everything worked.
        root_url: URL of the published root document, when there is one.
    """

    target: str
    n_items: int = 0
    n_written: int = 0
    n_unchanged: int = 0
    n_bytes: int = 0
    elapsed_s: float = 0.0
    published_items: list[str] = field(default_factory=list, repr=False)
    failed_items: list[str] = field(default_factory=list, repr=False)
    errors: list[str] = field(default_factory=list)
    root_url: str | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("target", "root_url") and isinstance(value, str):
            value = redact(value, queries="credentials")
        elif name == "errors" and not isinstance(value, _Messages):
            value = _Messages(value)
        super().__setattr__(name, value)

    @property
    def ok(self) -> bool:
        """Whether every object was published."""
        return not self.errors

    def raise_for_errors(self) -> None:
        """Raise :class:`PublishError` listing the first problems, if there were any."""
        if self.errors:
            shown = "\n  ".join(self.errors[:10])
            more = f"\n  ... and {len(self.errors) - 10} more" if len(self.errors) > 10 else ""
            raise PublishError(
                f"publishing to {self.target} failed for {len(self.errors)} object(s):\n"
                f"  {shown}{more}",
                result=self,
            )

    def summary(self) -> str:
        """One line for people."""
        mib = self.n_bytes / 2**20
        return (f"{self.target}: {self.n_items} item(s), {self.n_written} written "
                f"({mib:.1f} MiB), {self.n_unchanged} unchanged, {len(self.errors)} failed, "
                f"{self.elapsed_s:.1f} s")
