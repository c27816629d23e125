from __future__ import annotations

import modelport


def test_exports_match_all() -> None:
    public = {name for name in dir(modelport) if not name.startswith("_")} - {
        "annotations",
        "TYPE_CHECKING",
        "Any",
    }
    modules = {
        "app",
        "cli",
        "environment",
        "errors",
        "monitoring",
        "registry",
        "releases",
        "runtimes",
        "security",
        "serving",
        "settings",
        "signature",
        "tables",
        "validation",
    }
    assert public - modules == set(modelport.__all__) - {"__version__", "errors"}
    for name in modelport.__all__:
        assert hasattr(modelport, name), name


def test_register_from_a_notebook(tmp_path, sklearn_model, data) -> None:  # type: ignore[no-untyped-def]
    settings = modelport.Settings(home=tmp_path / "nb", equivalence_rows=100)
    version = modelport.register(sklearn_model, name="nb", sample=data, target="label", settings=settings)
    assert version.ref == "nb@1"
    registry = modelport.open_registry(settings)
    try:
        assert "label" in registry.predict("nb", data.drop(columns=["label"]).head(2)).columns
    finally:
        registry.close()


def test_the_error_table_in_the_docs_is_the_one_in_the_code() -> None:
    """docs/serving.md's error table row by row against ``errors.OUTCOMES`` (first match wins, so
    the order matters too) — and every adapter reads that one table."""
    import re
    from pathlib import Path

    from modelport.errors import INTERNAL, OUTCOMES

    text = (Path(__file__).parents[1] / "docs" / "serving.md").read_text(encoding="utf-8")
    section = text.split("### Errors, one table for every adapter", 1)[1].split("\n\n", 2)[1]
    documented = []
    for line in section.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        name = re.search(r"`(\w+)`", cells[0])
        documented.append(
            (
                name.group(1) if name else "*",
                int(cells[1].split()[0]),
                cells[2].split()[0].strip("`"),
                cells[3].strip("`"),
                int(cells[4]),
            )
        )
    expected = [(kind.__name__, o.http, o.grpc, o.mlflow, o.exit) for kind, o in OUTCOMES] + [
        ("*", INTERNAL.http, INTERNAL.grpc, INTERNAL.mlflow, INTERNAL.exit)
    ]
    assert documented == expected


def test_no_adapter_keeps_an_error_table_of_its_own() -> None:
    from pathlib import Path

    source = Path(__file__).parents[1] / "src" / "modelport"
    for adapter in ("serving/rest.py", "serving/grpc.py", "cli/main.py"):
        text = (source / adapter).read_text(encoding="utf-8")
        assert "outcome_for" in text, adapter
        assert "isinstance(error, Unauthenticated)" not in text, adapter
