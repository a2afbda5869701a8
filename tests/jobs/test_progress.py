"""The live progress display: terminal, Jupyter notebook, or nothing."""

from __future__ import annotations

import io
import sys
import types

from rich.console import Console

from eoextract.jobs._progress import RunProgress


class FakeDisplay:
    """Stands in for ``IPython.display`` (IPython is not installed here): records what
    would be displayed and the updates of its display handle."""

    def __init__(self) -> None:
        self.shown: list[str] = []
        self.updates: list[str] = []
        self.module = types.ModuleType("IPython.display")
        self.module.HTML = lambda data: types.SimpleNamespace(data=data)
        self.module.display = self.display

    def display(self, obj, display_id=False):
        assert display_id is True
        self.shown.append(obj.data)
        return types.SimpleNamespace(update=lambda new: self.updates.append(new.data))


def test_in_a_notebook_the_display_is_html_updated_in_place(monkeypatch):
    fake = FakeDisplay()
    package = types.ModuleType("IPython")
    package.display = fake.module
    monkeypatch.setitem(sys.modules, "IPython", package)
    monkeypatch.setitem(sys.modules, "IPython.display", fake.module)
    out = io.StringIO()
    clock = iter([0.0, 10.0, 20.0, 30.0]).__next__
    progress = RunProgress({"local": 2}, console=Console(file=out, force_jupyter=True), min_interval=1.0,
                           clock=clock)
    assert progress.active and progress.mode == "jupyter"
    progress.update({"not_started": 3, "queued": 1}, {"local": {"queued": 1}})
    progress.update({"finished": 2, "running": 2}, {"local": {"running": 2}})
    progress.close()
    assert len(fake.shown) == 1 and len(fake.updates) == 1  # one output, updated in place
    assert fake.updates[-1].startswith("<pre") and "2/4 final" in fake.updates[-1]
    assert "2/2 slots" in fake.updates[-1] and "running 2" in fake.updates[-1]
    assert "\x1b[" not in "".join(fake.shown + fake.updates)  # HTML, no terminal escape codes
    assert out.getvalue() == ""  # nothing printed around it
    assert not progress.active


def test_in_a_notebook_without_ipython_it_goes_quiet(monkeypatch):
    monkeypatch.setitem(sys.modules, "IPython", None)
    monkeypatch.setitem(sys.modules, "IPython.display", None)
    out = io.StringIO()
    progress = RunProgress({"local": 1}, console=Console(file=out, force_jupyter=True))
    progress.update({"queued": 1}, {"local": 1})
    assert not progress.active and out.getvalue() == ""
    progress.close()


def test_without_terminal_or_notebook_nothing_is_shown():
    out = io.StringIO()
    progress = RunProgress({"local": 1}, console=Console(file=out))
    assert progress.mode is None and not progress.active
    progress.update({"queued": 1}, {"local": 1})
    progress.close()
    assert out.getvalue() == ""


def test_on_a_terminal_the_live_display_is_used():
    out = io.StringIO()
    progress = RunProgress({"local": 1}, console=Console(file=out, force_terminal=True, width=120))
    assert progress.mode == "terminal"
    progress.update({"finished": 1}, {"local": 0})
    progress.close()
    assert "1/1 final" in out.getvalue()
