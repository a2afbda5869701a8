from eoextract.jobs._backends import add_tag, find_tag, make_tag


def test_tag_round_trip_keeps_user_description():
    tag = make_tag("row 7/a", 2, "abc123")
    assert " " not in tag and "/" not in tag
    text = add_tag("Crop extraction for tile 31UFS", tag)
    assert text.startswith("Crop extraction for tile 31UFS")
    assert find_tag(text) == tag


def test_retagging_replaces_the_old_tag():
    first = add_tag(None, make_tag("k", 1, "n1"))
    second = add_tag(first, make_tag("k", 2, "n2"))
    assert find_tag(second) == make_tag("k", 2, "n2")
    assert second.count("[eoextract:") == 1


def test_no_tag():
    assert find_tag(None) is None
    assert find_tag("plain description") is None
