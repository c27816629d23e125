"""Batch scoring (docs/batch.md): a file, a folder or a query scored with one version, through the
functions online serving uses, in bounded memory, resumable without a missing or duplicated row.

- :mod:`~modelport.batch.plan` — the input cut into chunks that can be read alone, and its digest.
- :mod:`~modelport.batch.chunk` — one chunk through the serving pipeline: columns, value checks,
  runtime, encoding.
- :mod:`~modelport.batch.job` — a job: its parts (the manifest of completed chunks), the atomic
  assembly of OUTPUT, resume.
- :mod:`~modelport.batch.store` — the jobs' records in the registry database.

No HTTP here: the CLI (`modelport score`) and the API are thin callers.
"""
