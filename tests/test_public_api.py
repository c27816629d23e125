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
