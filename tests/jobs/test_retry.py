import requests
from openeo.rest import OpenEoApiError

from eoextract.errors import ChecksumMismatch, UnsafeAssetPath
from eoextract._util.retry import parse_retry_after as _parse_retry_after
from eoextract.jobs._classify import Backoff, classify, to_backend_error
from eoextract.errors import FatalBackendError, JobLost, RetryableBackendError


def api_error(status, code="Internal"):
    return OpenEoApiError(http_status_code=status, code=code, message="boom")


def test_server_errors_and_throttling_are_retryable():
    for status in (500, 502, 503, 504, 429):
        info = classify(api_error(status))
        assert info.retryable, status
        assert not info.lost


def test_client_errors_are_fatal():
    info = classify(api_error(400, "ProcessGraphInvalid"))
    assert not info.retryable
    assert info.error_class == "FatalBackendError"
    assert "ProcessGraphInvalid" in info.message


def test_404_on_known_job_means_lost():
    assert classify(api_error(404, "JobNotFound")).lost
    assert classify(api_error(404, "NotFound"), job_known=True).lost
    assert not classify(api_error(404, "NotFound")).retryable


def test_connection_errors_retryable_user_errors_fatal():
    assert classify(requests.ConnectionError("refused")).retryable
    info = classify(KeyError("sample_id"))
    assert not info.retryable
    assert info.error_class == "UserCodeError.KeyError"
    assert classify(ChecksumMismatch("bad")).retryable
    assert not classify(UnsafeAssetPath("../x")).retryable


def test_to_backend_error_maps_to_most_specific_class():
    assert isinstance(to_backend_error(api_error(404, "JobNotFound")), JobLost)
    assert isinstance(to_backend_error(api_error(503)), RetryableBackendError)
    err = to_backend_error(api_error(400), backend_name="b1", job_key="7")
    assert isinstance(err, FatalBackendError)
    assert (err.backend_name, err.job_key, err.status_code) == ("b1", "7", 400)


def test_backoff_grows_is_capped_and_honours_retry_after():
    b = Backoff(base=2, factor=2, maximum=10)
    assert [b.delay(n) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 10, 10]
    assert b.delay(1, retry_after=7) == 7
    assert b.delay(3, retry_after=1) == 8
    assert Backoff.coerce(5).delay(1) == 5
    assert Backoff.coerce(lambda n: n * 3).delay(2) == 6


def test_retry_after_header_forms():
    assert _parse_retry_after("12") == 12
    assert _parse_retry_after(None) is None
    assert _parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert _parse_retry_after("soon") is None
