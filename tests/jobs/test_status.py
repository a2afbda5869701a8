import pytest

from eoextract.jobs.status import (
    ACTIVE,
    ALLOWED,
    OPENEO_STATUS,
    TERMINAL,
    USER_RETRYABLE,
    JobStatus,
    is_allowed,
)


def test_every_status_has_a_transition_row_and_openeo_name():
    assert set(ALLOWED) == set(JobStatus)
    assert set(OPENEO_STATUS) == set(JobStatus)


def test_terminal_statuses_do_not_move_except_user_retry():
    for status in TERMINAL:
        assert ALLOWED[status] == frozenset()
        assert not is_allowed(status, JobStatus.NOT_STARTED)
    for status in USER_RETRYABLE:
        assert is_allowed(status, JobStatus.NOT_STARTED, user_retry=True)
    assert not is_allowed(JobStatus.FINISHED, JobStatus.NOT_STARTED, user_retry=True)


def test_happy_path_is_allowed_and_never_backwards():
    path = ["not_started", "creating", "created", "queued", "running", "downloading",
            "postprocessing", "finished"]
    for old, new in zip(path, path[1:]):
        assert is_allowed(old, new)
    # a job never goes back from running to queued (openeo's status can go backwards)
    assert not is_allowed("running", "queued")
    assert not is_allowed("finished", "queued")


def test_active_and_terminal_are_disjoint():
    assert not ACTIVE & TERMINAL


def test_unknown_status_is_rejected():
    with pytest.raises(ValueError):
        is_allowed("bogus", "finished")
