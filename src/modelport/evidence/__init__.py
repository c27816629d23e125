"""Evidence at time T (docs/evidence.md): what served a model at a moment, why, and the proof, as a
zip that ``tools/verify_evidence.py`` checks with the standard library alone.

- :mod:`~modelport.evidence.timeline` — pure folds over audit records (what an alias served, the
  release running, the approved change that led there);
- :mod:`~modelport.evidence.build` — :func:`build_evidence`, the core;
- :mod:`~modelport.evidence.bundle` — the deterministic zip and its manifest;
- :mod:`~modelport.evidence.markdown` — ``summary.md`` and the model cards;
- :mod:`~modelport.evidence.routes` — the REST route (the CLI command is ``cli/evidence.py``).

Nothing is imported here: the console's audit page imports the timeline without the rest.
"""
