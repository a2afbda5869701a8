"""start_job receives the keyword arguments it declares (all with ``**kwargs``)."""

from __future__ import annotations

from eoextract.jobs._tasks import _call_with_accepted


def test_only_declared_arguments_are_passed_also_on_repeated_calls():
    def narrow(row, connection):
        return (row, connection)

    def wide(row, **kwargs):
        return (row, sorted(kwargs))

    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self, row, provider):
            return (row, provider)

    for _ in range(2):  # the second call meets what the first learned
        assert _call_with_accepted(narrow, row=1, connection=2, provider="p") == (1, 2)
        assert _call_with_accepted(wide, row=1, connection=2, provider="p") == (1, ["connection", "provider"])
        assert _call_with_accepted(Unhashable(), row=1, connection=2, provider="p") == (1, "p")
