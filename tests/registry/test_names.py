from __future__ import annotations

import pytest

from modelport.errors import InvalidName
from modelport.registry.names import ModelRef, check_alias_name, check_model_name, parse_ref


@pytest.mark.parametrize("name", ["credit-rating", "a", "m1.v2_x", "9lives"])
def test_valid_model_names(name: str) -> None:
    assert check_model_name(name) == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "empty"),
        ("a/b", "path characters"),
        ("..", "path characters"),
        ("a..b", "path characters"),
        ("a\\b", "path characters"),
        ("a\0b", "path characters"),
        ("Credit", "lower-case"),
        ("-x", "lower-case"),
        ("x-", "lower-case"),
        ("a b", "lower-case"),
        ("a@b", "lower-case"),
        ("x" * 101, "lower-case"),
    ],
)
def test_invalid_model_names(name: str, message: str) -> None:
    with pytest.raises(InvalidName, match=message):
        check_model_name(name)


@pytest.mark.parametrize(
    ("alias", "message"),
    [
        ("123", "all digits"),
        ("0", "all digits"),
        ("prod/x", "path characters"),
        ("..", "path characters"),
        ("../etc", "path characters"),
        ("Production", "must match"),
        ("_x", "must match"),
        ("a" * 64, "must match"),
        ("latest", "reserved"),
        ("", "empty"),
    ],
)
def test_invalid_aliases(alias: str, message: str) -> None:
    with pytest.raises(InvalidName, match=message):
        check_alias_name(alias)


def test_alias_of_63_characters_is_valid() -> None:
    assert check_alias_name("a" * 63) == "a" * 63


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("credit", ModelRef("credit", alias="latest")),
        ("credit@production", ModelRef("credit", alias="production")),
        ("credit@12", ModelRef("credit", version=12)),
        ("credit@latest", ModelRef("credit", alias="latest")),
        ("credit@q3-2026", ModelRef("credit", alias="q3-2026")),
    ],
)
def test_parse_ref(text: str, ref: ModelRef) -> None:
    assert parse_ref(text) == ref


@pytest.mark.parametrize("text", ["", "credit@", "credit@0", "credit@01", "a/b@1", "credit@prod/x", "@1"])
def test_parse_ref_rejects(text: str) -> None:
    with pytest.raises(InvalidName):
        parse_ref(text)


def test_ref_str_round_trips() -> None:
    for text in ("m@3", "m@production", "m@latest"):
        assert str(parse_ref(text)) == text
