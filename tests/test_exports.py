import importlib

import eoextract


def test_all_public_names_resolve():
    for name in eoextract.__all__:
        assert getattr(eoextract, name) is not None, name


def test_public_names_are_pinned():
    # Adding or removing a public name must be a deliberate change of this list.
    expected = set(eoextract._EXPORTS) | {"__version__"}
    assert set(eoextract.__all__) == expected
    assert "JobStatus" in expected and "LocalBackend" in expected


def test_unknown_attribute_raises():
    mod = importlib.import_module("eoextract")
    try:
        mod.does_not_exist  # noqa: B018
    except AttributeError as exc:
        assert "does_not_exist" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")
