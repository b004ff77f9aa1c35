"""`load_object`: every `package.module:attr` a setting names, loaded one way."""

from __future__ import annotations

import pytest

from flotilla.errors import ConfigurationError
from flotilla.runtime import load_object

NESTED = type("NESTED", (), {"inner": 42})


def test_a_path_gives_its_object_once_resolved() -> None:
    assert load_object("json:dumps", what="tool") is __import__("json").dumps
    assert load_object(f"{__name__}:NESTED.inner", what="tool") == 42
    before = load_object.cache_info().hits
    load_object("json:dumps", what="tool")
    assert load_object.cache_info().hits == before + 1


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("json", "must look like 'package.module:attr'"),
        (":dumps", "must look like 'package.module:attr'"),
        ("no_such_module_xyz:thing", "cannot import: ModuleNotFoundError"),
        ("json:no_such_attr", "cannot import: AttributeError: json has no 'no_such_attr'"),
    ],
)
def test_a_bad_path_is_a_configuration_error_that_names_it(path: str, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words) as caught:
        load_object(path, what="custom tool")
    assert str(caught.value).startswith(f"custom tool {path!r}")
