from __future__ import annotations

import modelport


def test_exports_match_all() -> None:
    import modelport.cli.main  # submodules imported so far must not show either

    # dir() is what a notebook's completion offers: the public API and nothing else — not the
    # submodules, not `annotations`, `TYPE_CHECKING` or `Any` (d4cef34 showed all of those).
    assert dir(modelport) == sorted(modelport.__all__)
    for name in modelport.__all__:
        assert hasattr(modelport, name), name
    assert not hasattr(modelport, "no_such_name")


def test_register_takes_typed_keyword_arguments() -> None:
    """`modelport.register`'s options are named and typed (an editor completes them), not `**options`:
    the same as `Registry.register`'s, less the file-only ones."""
    import inspect

    from modelport.registry.service import Registry

    api = inspect.signature(modelport.register).parameters
    assert not [p for p in api.values() if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    core = inspect.signature(Registry.register).parameters
    # ... and less `extra_lineage`, an importer's record of its origin (registry/mlflow_import.py)
    file_only = {"self", "path", "format", "trust_pickle", "creator", "progress", "extra_lineage"}
    assert set(api) - {"settings"} == set(core) - file_only
    for name in set(api) - {"model", "settings"}:
        assert api[name].annotation == core[name].annotation, name
        assert api[name].default == core[name].default, name


def test_register_from_a_notebook(tmp_path, sklearn_model, data) -> None:  # type: ignore[no-untyped-def]
    settings = modelport.Settings(home=tmp_path / "nb", equivalence_rows=100)
    modelport.open_registry(settings, create=True).close()  # `modelport init`, from Python
    version = modelport.register(
        sklearn_model, name="nb", sample=data, target="label", alias="production", settings=settings
    )
    assert version.ref == "nb@1"
    # what a notebook shows for `version` or `print(version)`: who it is, on one line — d4cef34 dumped
    # the signature, environment and every golden row (~10 KB)
    shown = repr(version)
    assert str(version) == shown and "\n" not in shown and len(shown) < 250, shown
    assert shown.startswith("VersionRecord(ref='nb@1', uuid=") and "aliases=('production',)" in shown
    assert len(repr(version.artifacts[0])) < 120
    registry = modelport.open_registry(settings)
    try:
        assert len(repr(registry.model("nb"))) < 200
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
