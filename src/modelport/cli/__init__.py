"""The ``modelport`` command line: thin commands over the core services."""
