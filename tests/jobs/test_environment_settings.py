"""The environment's HTTP settings are read once per host and TTL, and kept for few hosts."""

from __future__ import annotations

import requests

from eoextract.jobs._environment_settings import EnvironmentSettingsCache, cache_environment_settings


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _counting(session: requests.Session):
    calls: list[str] = []
    original = session.merge_environment_settings

    def merge(url, proxies, stream, verify, cert):
        calls.append(url)
        return original(url, proxies, stream, verify, cert)

    return merge, calls


def test_the_environment_is_read_once_per_host_until_the_ttl_passes(monkeypatch):
    session = requests.Session()
    merge, calls = _counting(session)
    clock = _Clock()
    cache = EnvironmentSettingsCache(merge, session, ttl_s=10.0, clock=clock)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    first = cache("https://backend.invalid/jobs?limit=100", {}, None, None, None)
    again = cache("https://backend.invalid/jobs/j-1", {}, None, None, None)
    assert len(calls) == 1
    assert first["proxies"]["https"] == again["proxies"]["https"] == "http://proxy.invalid:3128"
    again["proxies"]["https"] = "changed by a caller"
    assert cache("https://backend.invalid/x", {}, None, None, None)["proxies"]["https"] == "http://proxy.invalid:3128"
    # a changed environment is seen once the TTL passed
    monkeypatch.setenv("NO_PROXY", "backend.invalid")
    clock.now = 10.5
    assert "https" not in cache("https://backend.invalid/jobs", {}, None, None, None)["proxies"]
    assert len(calls) == 2


def test_requests_with_their_own_proxies_or_no_trust_in_the_environment_bypass_the_cache():
    session = requests.Session()
    merge, calls = _counting(session)
    cache = EnvironmentSettingsCache(merge, session)
    cache("https://a.invalid/", {"https": "http://mine.invalid:1"}, None, None, None)
    cache("https://a.invalid/", {"https": "http://mine.invalid:1"}, None, None, None)
    session.trust_env = False
    cache("https://a.invalid/", {}, None, None, None)
    cache("https://a.invalid/", {}, None, None, None)
    assert len(calls) == 4 and len(cache) == 0


def test_the_cache_keeps_at_most_max_hosts():
    session = requests.Session()
    merge, calls = _counting(session)
    cache = EnvironmentSettingsCache(merge, session, max_hosts=3)
    for i in range(50):
        cache(f"https://host{i}.invalid/jobs", {}, None, None, None)
    assert len(cache) == 3
    cache("https://host49.invalid/jobs", {}, None, None, None)  # a kept host: no new read
    assert len(calls) == 50


def test_a_session_is_wrapped_once_and_still_sends_requests(local_backend):
    session = requests.Session()
    assert cache_environment_settings(cache_environment_settings(session)) is session
    assert isinstance(session.merge_environment_settings, EnvironmentSettingsCache)
    assert not isinstance(session.merge_environment_settings._merge, EnvironmentSettingsCache)
    for _ in range(3):
        assert session.get(local_backend.url, timeout=10).ok
    assert len(session.merge_environment_settings) == 1
