"""The registry: models → immutable versions → mutable aliases, with a content-addressed artifact
store. ``service.Registry`` is the entry point; ``app.open_registry`` wires it from settings.

Nothing is imported here: ``modelport.registry.names`` and ``.records`` are light (the CLI reads them
to print its help), ``.service`` brings SQLAlchemy and numpy. Import from the submodule you need; the
public names are re-exported by the ``modelport`` package itself.
"""
