import pytest

from eoextract.errors import InvalidTransition
from eoextract.jobs.status import (
    ACTIVE,
    ALLOWED,
    OPENEO_STATUS,
    TERMINAL,
    USER_RETRYABLE,
    BackendStatus,
    JobStatus,
    check_transition,
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


def test_check_transition_raises_what_is_allowed_refuses():
    for old in JobStatus:
        for new in JobStatus:
            for user_retry in (False, True):
                if is_allowed(old, new, user_retry=user_retry):
                    check_transition(old, new, user_retry=user_retry)
                else:
                    with pytest.raises(InvalidTransition):
                        check_transition(old, new, user_retry=user_retry)
    with pytest.raises(InvalidTransition, match="job 'k': 'finished' -> 'queued' is not allowed") as info:
        check_transition("finished", "queued", job_key="k")
    assert info.value.job_key == "k"
    with pytest.raises(ValueError):
        check_transition("bogus", "finished")


def test_openeo_status_of_a_job_on_the_backend_is_a_backend_status():
    for status in (JobStatus.CREATED, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.FINISHED,
                   JobStatus.ERROR, JobStatus.CANCELED):
        assert OPENEO_STATUS[status] in set(BackendStatus)
    assert type(OPENEO_STATUS[JobStatus.RUNNING]) is str
