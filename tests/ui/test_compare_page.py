"""The compare page (``/ui/compare``) and the batched read behind the Model page, in-process.

The registry is a copy of ``keyed`` with 120 more ``credit`` versions added through the store's own
``add_version`` (copies of v1), one of them (v3) carrying markup in its parameters, metrics, tags and
signature, and a validation report on v2: the attacks and the paging run on real rows."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from modelport.registry.names import ModelRef
from modelport.registry.store import NewVersion
from modelport.ui.compare import signature_rows, value_rows
from tests.security.conftest import Keys, keyed_home, keys, open_home
from tests.serving.conftest import InProcess, serve_in_process
from tests.ui.test_console import assert_secure_headers, sign_in

__all__ = ["keyed_home", "keys"]  # fixtures, imported for this module

ADDED = 120  # credit: v1, v2 (keyed) and v3 … v122
HOSTILE = "<script>alert(1)</script>"


def copy_of(version: Any, **changes: Any) -> NewVersion:
    """A new version with ``version``'s rows and ``changes`` (inserted through the store: no registration)."""
    fields = {
        "model": version.model,
        "status": version.status,
        "serving_format": version.serving_format,
        "signature": version.signature,
        "golden": version.golden,
        "environment": version.environment,
        "lineage": version.lineage,
        "conversion": version.conversion,
        "description": version.description,
        "tags": version.tags,
        "creator": "local:test",
        "artifacts": version.artifacts,
    }
    return NewVersion(**(fields | changes))


@pytest.fixture(scope="module")
def home(keyed_home: Path, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("compare") / "home"
    shutil.copytree(keyed_home, home)
    registry = open_home(home)
    try:
        v1 = registry.get(ModelRef("credit", version=1))
        signature = dict(v1.signature)
        inputs = [dict(f) for f in signature["inputs"]]
        inputs[0] = inputs[0] | {"maximum": 12345.0}  # a changed range
        inputs.append(
            {
                "name": f'"><img src=x onerror=alert(2)>{HOSTILE}',
                "dtype": "string",
                "minimum": None,
                "maximum": None,
                "categories": [HOSTILE],
                "missing_rate": 0.0,
            }
        )
        lineage = dict(v1.lineage) | {"params": {HOSTILE: HOSTILE}, "metrics": {"auc": 0.9}}
        registry.store.add_version(
            copy_of(v1, signature=signature | {"inputs": inputs}, lineage=lineage, creator=HOSTILE)
        )
        for _ in range(ADDED - 1):
            registry.store.add_version(copy_of(v1))
        registry.store.validation.add_report(
            "credit",
            2,
            passed=True,
            environment_hash="e" * 64,
            report={"latency": {"p95_us": 180.4}, "load": {"p95_ms": 12.5}},
            actor="local:test",
        )
    finally:
        registry.close()
    return home


@pytest.fixture(scope="module")
def app(home: Path) -> Iterator[InProcess]:
    with serve_in_process(home, insecure_dev=False) as app:
        yield app


# -- the batched read --------------------------------------------------------------------------------


def test_version_summaries_page_the_newest_versions_in_two_queries(home: Path) -> None:
    registry = open_home(home)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    try:
        full = {v.number: v for v in registry.versions("credit")}
        event.listen(registry.store.db.engine, "before_cursor_execute", count)
        try:
            first = registry.version_summaries("credit", limit=50)
        finally:
            event.remove(registry.store.db.engine, "before_cursor_execute", count)
        # the model's id, the page's rows, their aliases: never one query per version
        assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) <= 3, statements
        assert [s.number for s in first] == list(range(ADDED + 2, ADDED + 2 - 50, -1))
        second = registry.version_summaries("credit", limit=50, before=first[-1].number)
        last = registry.version_summaries("credit", limit=50, before=second[-1].number)
        assert [s.number for s in last] == list(range(22, 0, -1))
        assert registry.version_summaries("credit", before=1) == []
        for summary in first + second + last:  # what list_versions says, field for field
            record = full[summary.number]
            expected = {f.name: getattr(record, f.name) for f in dataclasses.fields(summary)}
            assert dataclasses.asdict(summary) == expected
        assert full[1].aliases == ("production",) and full[2].aliases == ("staging",)
    finally:
        registry.close()


def test_the_model_page_shows_one_page_and_links_older_ones(app: InProcess, keys: Keys) -> None:
    with sign_in(app, keys.admin) as client:
        page = client.get("/ui/models/credit")
        assert page.status_code == 200
        assert page.text.count('name="v" value=') == 50
        assert f">v{ADDED + 2}</a>" in page.text and ">v72</a>" not in page.text
        assert 'href="/ui/models/credit?before=73"' in page.text
        older = client.get("/ui/models/credit", params={"before": "23"})
        assert ">v22</a>" in older.text and ">v1</a>" in older.text and "Older versions" not in older.text
        assert 'form="compare"' in page.text and 'action="/ui/compare"' in page.text
        for junk in ("x", "-1", "9" * 30):  # not a number: the newest page
            assert client.get("/ui/models/credit", params={"before": junk}).status_code == 200


# -- the compare page --------------------------------------------------------------------------------


def _compare(client: httpx.Client, model: str, *numbers: Any) -> httpx.Response:
    return client.get("/ui/compare", params=[("model", model), *(("v", str(n)) for n in numbers)])


def test_compare_shows_recorded_facts_side_by_side(app: InProcess, keys: Keys) -> None:
    with sign_in(app, keys.admin) as client:
        page = _compare(client, "credit", 3, 1, 2)
        assert page.status_code == 200, page.text
        assert_secure_headers(page)
        assert page.headers["cache-control"] == "no-store"
        text = page.text
        assert "Compare credit v1, v2, v3" in text  # ascending, whatever order they were asked in
        assert "passed" in text and "p95 180 µs in-process · p95 12.5 ms under load" in text
        assert "not validated" in text
        assert "12345" in text and "<mark>" in text
        signature = text.split('id="signature"')[1]
        assert signature.count("<td>added</td>") == 1 and signature.count("<td>changed</td>") >= 1
        ten = _compare(client, "credit", *range(1, 11))
        assert ten.status_code == 200 and "v10</a>" in ten.text


def test_compare_bounds(app: InProcess, keys: Keys) -> None:
    with sign_in(app, keys.admin) as client:
        for numbers in ((), (1,), (1, 1), tuple(range(1, 12)), (1, "x"), (1, "-2"), (1, "0"), (1, "9" * 12)):
            answer = _compare(client, "credit", *numbers)
            assert answer.status_code == 400, (numbers, answer.status_code)
            assert_secure_headers(answer)
        assert client.get("/ui/compare", params={"v": ["1", "2"]}).status_code == 400  # no model
        for model, numbers in (("credit", (1, 999)), ("nothere", (1, 2))):
            answer = _compare(client, model, *numbers)
            assert answer.status_code == 404
            assert_secure_headers(answer)


def test_compare_keeps_to_the_keys_models(app: InProcess, keys: Keys) -> None:
    with sign_in(app, keys.consumer) as client:  # credit*
        assert _compare(client, "credit", 1, 2).status_code == 200
        outside = _compare(client, "fraud", 1, 2)
        assert outside.status_code == 404  # as if it did not exist, like an unknown model
        unknown = _compare(client, "creditx", 1, 2)  # within the key's patterns, not registered
        assert unknown.status_code == 404
        assert outside.text.replace("fraud", "X") == unknown.text.replace("creditx", "X")
    with sign_in(app, keys.other) as client:  # fraud only
        assert _compare(client, "credit", 1, 2).status_code == 404
    with app.client() as client:  # no session: the sign-in page
        answer = _compare(client, "credit", 1, 2)
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/login"


def test_compare_escapes_hostile_records_and_input(app: InProcess, keys: Keys) -> None:
    with sign_in(app, keys.admin) as client:
        page = _compare(client, "credit", 2, 3).text
        assert "<script>alert" not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in page
        for model in ('"><script>alert(3)</script>', "a" * 500, "credit\x00"):
            answer = _compare(client, model, 1, 2)
            assert answer.status_code in (400, 404), model
            assert "<script>alert(3)" not in answer.text
            assert_secure_headers(answer)
        answer = client.get("/ui/compare?model=credit&v=1&v=%3Cscript%3Ealert(4)%3C/script%3E")
        assert answer.status_code == 400 and "<script>alert(4)" not in answer.text


# -- the folding, without a server -------------------------------------------------------------------


def _feature(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "dtype": "float64",
        "minimum": 0.0,
        "maximum": 1.0,
        "categories": None,
        "missing_rate": 0.0,
    } | fields


def test_signature_rows_name_what_was_added_removed_and_changed() -> None:
    outputs = {"task": "classification", "classes": [0, 1]}
    city = _feature("city", dtype="string", minimum=None, maximum=None, categories=["a", "b"])
    first = {"inputs": [_feature("age"), _feature("income"), city], "outputs": outputs}
    second = {
        "inputs": [
            _feature("age"),
            _feature("income", maximum=2.0),
            _feature("city", dtype="string", minimum=None, maximum=None, categories=["a", "c"]),
            _feature("debt"),
        ],
        "outputs": outputs | {"classes": [0, 1, 2]},
    }
    third = {"inputs": [_feature("age"), _feature("debt")], "outputs": outputs}
    rows = {row.name: row for row in signature_rows([first, second, third])}
    assert list(rows) == ["age", "income", "city", "debt", "(output)"]
    assert rows["age"].change == "" and rows["age"].differs == (False, False, False)
    assert rows["age"].cells[0] == "float64, 0 to 1"
    assert rows["income"].change == "removed" and rows["income"].cells == (
        "float64, 0 to 1",
        "float64, 0 to 2",
        "",
    )
    assert rows["income"].differs == (False, True, True)
    assert rows["city"].change == "removed" and rows["city"].cells[1] == "string: a, c"
    assert rows["debt"].change == "added" and rows["debt"].cells[0] == ""
    assert rows["(output)"].change == "changed" and rows["(output)"].cells[1] == "classification: 0, 1, 2"
    same = signature_rows(
        [
            first,
            {
                "inputs": [_feature("age"), _feature("income"), city | {"missing_rate": 0.25}],
                "outputs": outputs,
            },
        ]
    )
    assert same[2].change == "changed" and same[2].cells[1].endswith("25.0 % missing")


def test_value_rows_compare_metrics_and_params() -> None:
    rows = value_rows([{"auc": 0.81, "C": 1.0}, {"auc": 0.84, "C": 1.0, "depth": 3}, {"C": 1.0}])
    by_name = {row.name: row for row in rows}
    assert by_name["C"].change == "" and by_name["C"].cells == ("1.0", "1.0", "1.0")
    assert by_name["auc"].change == "removed" and by_name["auc"].differs == (False, True, True)
    assert by_name["depth"].change == "added"
    assert value_rows([{}, {}]) == []
    long = value_rows([{"x": "y" * 1000}, {"x": "z"}])[0]
    assert len(long.cells[0]) == 200 and long.cells[0].endswith("…")
