"""The private helpers every package shares (eoextract._util)."""

import datetime as dt
import json
import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eoextract._util.files import atomic_open, atomic_path, atomic_write, atomic_write_json
from eoextract._util.hrefs import is_absolute, is_local_absolute, is_url, local_path, resolve_local
from eoextract._util.redact import redact, redact_url
from eoextract._util.retry import ErrorClass, RetryPolicy, is_retryable_status, parse_retry_after
from eoextract._util.utc import format_utc, parse_utc, to_utc


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "sub" / "a.json"
    atomic_write_json(target, {"a": 1, "when": dt.datetime(2024, 1, 2, tzinfo=dt.UTC)})
    assert json.loads(target.read_text()) == {"a": 1, "when": "2024-01-02T00:00:00+00:00"}
    atomic_write(target, "text")
    assert target.read_text() == "text"
    assert sorted(os.listdir(target.parent)) == ["a.json"]


def test_a_failed_atomic_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target, "w") as fh:
        fh.write("half")
        raise RuntimeError("crash")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_utc_parsing_of_every_form_of_time():
    want = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
    for text in ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00z", "2024-05-01T14:00:00+02:00",
                 "2024-05-01T12:00:00"):
        assert parse_utc(text) == want
    assert parse_utc("not a time") is None and parse_utc("") is None and parse_utc(None) is None
    assert to_utc(np.datetime64("2024-05-01T12:00")) == want
    assert to_utc(pd.Timestamp("2024-05-01T12:00", tz="Europe/Brussels")) == want - dt.timedelta(hours=2)
    assert to_utc(3.5) is None and to_utc(pd.NaT) is None and to_utc("") is None
    assert format_utc(want) == "2024-05-01T12:00:00Z"


@settings(max_examples=300, deadline=None)
@given(when=st.datetimes(timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=45))]))
       | st.datetimes())
def test_plain_datetimes_come_out_of_to_utc_as_through_pandas(when):
    """A plain datetime takes a quick way through ``to_utc``; pandas' way gives the same (and
    None outside the years a pandas timestamp holds)."""
    try:
        stamp = pd.Timestamp(when)
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        want = stamp.to_pydatetime()
    except (ValueError, OverflowError):
        want = None
    got = to_utc(when)
    assert got == want and (got is None or (type(got) is dt.datetime and got.utcoffset() == dt.timedelta(0)))


def test_utc_formatting_to_a_chosen_precision():
    when = dt.datetime(2024, 5, 1, 12, 0, 7, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert format_utc(when, timespec="seconds") == "2024-05-01T10:00:07Z"
    assert format_utc(when, timespec="milliseconds") == "2024-05-01T10:00:07.123Z"
    assert format_utc(when) == "2024-05-01T10:00:07.123456Z"


def test_href_kinds():
    assert is_url("https://x/y") and is_url("s3://b/k") and not is_url("C:/data/x.tif")
    assert not is_url("a/b.tif") and is_absolute("/a") and is_absolute("s3://b") and not is_absolute("a/b")
    assert is_local_absolute("file:///a") and is_local_absolute("D:\\x") and not is_local_absolute("x/y")
    assert local_path("file:///a%20b/c.nc") == "/a b/c.nc" and local_path("https://h/x") is None
    assert local_path("rel/x.nc") == "rel/x.nc"
    assert resolve_local("../x.nc", "/out/stac") == "/out/x.nc"


def test_redaction_of_urls_and_credentials():
    assert redact("see https://bob:hunter2@host/x", environ={}) == "see https://bob:***@host/x"
    assert redact("token abcdef used", environ={"MY_TOKEN": "abcdef"}) == "token *** used"
    assert redact_url("https://h/f.nc?X-Amz-Signature=s3cr3t") == "https://h/f.nc?..."
    assert redact_url("https://h/f.nc") == "https://h/f.nc"
    assert redact_url("https://bob:pw@h/f.nc?sig=x") == "https://bob:***@h/f.nc?..."
    # free text, not only URLs: the path requests repeats in its errors, headers, pairs
    assert redact("with url: /f.nc?X-Amz-Signature=s3cr3t (Caused by ...)", environ={}) == \
        "with url: /f.nc?X-Amz-Signature=*** (Caused by ...)"
    assert redact("{'Authorization': 'Bearer abc.def'}", environ={}) == "{'Authorization': 'Bearer ***'}"
    assert redact("access_token=abc&x=1 password: 'pw'", environ={}) == "access_token=***&x=1 password: '***'"
    assert redact(redact("https://u:p@h/x?a=1")) == redact("https://u:p@h/x?a=1")


def test_retry_policy():
    policy = RetryPolicy(base=2, factor=2, maximum=10)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 10, 10]
    assert policy.delay(1, retry_after=7) == 7 and policy.delay(1, retry_after=100) == 10
    assert RetryPolicy(base=1, retry_after_cap=60).delay(1, retry_after=100) == 60
    jittered = RetryPolicy(base=10, jitter=0.5)
    assert all(5 <= jittered.delay(1) <= 10 for _ in range(50))
    assert RetryPolicy.coerce(5).delay(1) == 5 and RetryPolicy.coerce(lambda n: n * 3).delay(2) == 6
    with pytest.raises(TypeError):
        RetryPolicy.coerce("soon")
    assert all(is_retryable_status(s) for s in (None, 408, 429, 500, 503, 599))
    assert not any(is_retryable_status(s) for s in (400, 401, 403, 404, 409))
    assert parse_retry_after(" 12 ") == 12 and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert ErrorClass.user_code(KeyError) == "UserCodeError.KeyError"
    assert ErrorClass.JOB_LOST == "JobLost"
