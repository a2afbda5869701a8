"""Production profiles of the embedded backend: how closely it behaves like a production one.

A :class:`BackendProfile` bundles the behaviours production backends have and a test
backend usually lacks: per-user job limits, ``usage``/``costs`` in job metadata, asset URLs
that expire, CDSE-style results documents and paginated listings. ``"default"`` keeps the
embedded backend as it always was; ``"cdse"`` picks the values of the Copernicus Data Space
Ecosystem (openeo-geopyspark-driver). Every field can also be set on its own::

    BackendProfile.named("cdse", asset_url_ttl_s=2)   # CDSE, with URLs that expire fast
    BackendProfile(max_running_jobs=1)                 # today's backend, one job at a time

Sources of the CDSE values are listed in ``docs/backend.md`` ("Production profile").
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

PROFILE_NAMES = ("default", "cdse")
"""Names accepted by :meth:`BackendProfile.named`."""

LISTING_ORDERS = ("newest_first", "oldest_first")
"""Orders of ``GET /jobs`` accepted as :attr:`BackendProfile.job_listing_order`."""


@dataclass(frozen=True)
class BackendProfile:
    """Production-like behaviours of the embedded backend (all off in the default profile).

    Attributes:
        name: Profile the values came from (``"default"``, ``"cdse"`` or ``"custom"``).
        max_running_jobs: Jobs of one user that may run (or be submitted to run) at once;
            None: no limit. Starting more answers ``400 ConcurrentJobLimit`` unless a
            waiting place is free (see ``max_queued_jobs``).
        max_queued_jobs: Started jobs of one user that may wait ``queued`` for a free
            running place (None: any number). 0 refuses a start as soon as
            ``max_running_jobs`` jobs are active, as openeo-geopyspark-driver does.
        report_usage: Add ``usage`` (cpu, memory, duration, input pixels, soft errors,
            Sentinel Hub units) and ``costs`` (credits) to the metadata of ended jobs,
            modelled from the job's process graph so the same graph always costs the same.
        credits_base: Credits a job costs whatever it does.
        credits_per_cpu_hour: Credits per modelled CPU hour.
        credits_per_megapixel: Credits per modelled input megapixel.
        asset_url_ttl_s: Asset hrefs carry ``?expires=`` this many seconds after the
            results document was served and answer ``expired_url_status`` afterwards;
            None: asset URLs never expire.
        expired_url_status: HTTP status of an expired asset URL (``ResultLinkExpired``).
        result_style: Results document style (``"current"`` or ``"cdse"``); None keeps the
            backend's ``result_style`` setting.
        default_page_size: ``GET /jobs`` without ``limit`` returns this many jobs and a
            ``next`` link; None: all jobs.
        job_listing_order: Order of ``GET /jobs``: ``"newest_first"`` (by ``created``, as
            openeo-geopyspark-driver lists) or ``"oldest_first"`` (a backend that lists
            in creation order, for clients that must not rely on the order).
    """

    name: str = "default"
    max_running_jobs: int | None = None
    max_queued_jobs: int | None = None
    report_usage: bool = False
    credits_base: float = 0.5
    credits_per_cpu_hour: float = 1.0
    credits_per_megapixel: float = 0.01
    asset_url_ttl_s: int | None = None
    expired_url_status: int = 410
    result_style: str | None = None
    default_page_size: int | None = None
    job_listing_order: str = "newest_first"

    def __post_init__(self) -> None:
        for name in ("max_running_jobs", "max_queued_jobs", "asset_url_ttl_s", "default_page_size"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative, not {value!r}")
        if self.max_running_jobs == 0:
            raise ValueError("max_running_jobs must be at least 1 (None: no limit)")
        if self.default_page_size == 0:
            raise ValueError("default_page_size must be at least 1 (None: no pagination)")
        if self.job_listing_order not in LISTING_ORDERS:
            raise ValueError(f"job_listing_order must be one of {LISTING_ORDERS}, not {self.job_listing_order!r}")
        if self.expired_url_status not in (403, 410):
            raise ValueError("expired_url_status must be 403 or 410")

    @classmethod
    def named(cls, name: str, **overrides: Any) -> BackendProfile:
        """The profile called ``name`` with some fields changed.

        Raises:
            ValueError: On an unknown profile or field name.
        """
        if name not in _PROFILES:
            raise ValueError(f"unknown backend profile {name!r}; expected one of {PROFILE_NAMES}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown BackendProfile field(s): {', '.join(unknown)}")
        return replace(_PROFILES[name], **overrides)

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain data (for ``GET /`` and logs)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def resolve_profile(profile: BackendProfile | str | None, **overrides: Any) -> BackendProfile:
    """A profile from a name, a profile or None (the default profile), with overrides."""
    if isinstance(profile, BackendProfile):
        return replace(profile, **overrides) if overrides else profile
    return BackendProfile.named(profile or "default", **overrides)


_PROFILES: dict[str, BackendProfile] = {
    "default": BackendProfile(),
    "cdse": BackendProfile(
        name="cdse",
        max_running_jobs=2,
        max_queued_jobs=0,
        report_usage=True,
        asset_url_ttl_s=7 * 24 * 3600,
        expired_url_status=410,
        result_style="cdse",
        default_page_size=None,
    ),
}
