from __future__ import annotations

import pytest

from modelport.errors import InvalidName
from modelport.registry.names import (
    DEFAULT_ALIAS,
    LATEST,
    ModelRef,
    check_alias_name,
    check_model_name,
    parse_ref,
)


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
        ("credit", ModelRef("credit")),  # the default route: no selector
        ("credit@production", ModelRef("credit", alias="production")),
        ("credit@12", ModelRef("credit", version=12)),
        ("credit@latest", ModelRef("credit", alias="latest")),  # explicit: always the highest version
        ("credit@q3-2026", ModelRef("credit", alias="q3-2026")),
        ("credit@2.1.0", ModelRef("credit", label="2.1.0")),
        ("credit@v2.1.0-rc.1+b7", ModelRef("credit", label="2.1.0-rc.1+b7")),
    ],
)
def test_parse_ref(text: str, ref: ModelRef) -> None:
    assert parse_ref(text) == ref


@pytest.mark.parametrize(
    ("text", "selector"),
    [
        ("credit", None),
        ("credit@3", "3"),
        ("credit@staging", "staging"),
        ("credit@latest", LATEST),
        ("credit@2.1.0", "2.1.0"),
        ("credit@V2.1.0", "2.1.0"),
    ],
)
def test_selector_is_what_serving_resolves(text: str, selector: str | None) -> None:
    assert parse_ref(text).selector == selector


def test_the_default_route_is_production_then_latest() -> None:
    assert (DEFAULT_ALIAS, LATEST) == ("production", "latest")
    default = parse_ref("credit")
    assert default.selector is None and default != parse_ref("credit@latest")
    assert str(default) == "credit" and str(ModelRef("credit")) == "credit"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "model reference is empty: use NAME, NAME@ALIAS, NAME@VERSION or NAME@LABEL"),
        ("credit@", "ends with '@': add an alias, a version number or a label"),
        ("credit@0", "version numbers run from 1 to 2,147,483,647"),
        ("credit@01", "version numbers run from 1"),
        ("credit@99999999999", "version numbers run from 1"),
        ("a/b@1", "path characters"),
        ("credit@prod/x", "path characters"),
        ("@1", "model name is empty"),
        ("credit@2.1", "not a full semantic version"),
        ("credit@Prod", "must match"),
        ("credit@3@4", "must match"),
        ("Credit@3", "lower-case"),
    ],
)
def test_parse_ref_rejects(text: str, message: str) -> None:
    with pytest.raises(InvalidName, match=message):
        parse_ref(text)


def test_a_ref_selects_by_one_thing_at_most() -> None:
    with pytest.raises(InvalidName, match="one of version, alias or label"):
        ModelRef("credit", version=3, alias="production")


def test_ref_str_round_trips() -> None:
    for text in ("m", "m@3", "m@production", "m@latest", "m@2.1.0"):
        assert str(parse_ref(text)) == text
        assert parse_ref(str(parse_ref(text))) == parse_ref(text)
