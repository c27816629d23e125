"""Batch jobs submitted over the API (docs/batch.md): checked against the operator's roots, queued in
the registry, run by `modelport serve` in child processes, restarted when their runner went silent.

- :func:`submit` is what ``POST /api/v1/jobs`` calls: INPUT and OUTPUT must resolve — symlinks
  followed — inside one of ``MODELPORT_BATCH_ROOTS``; a relative path is taken from the first root.
  ``..`` is refused before anything is resolved. With no roots the API runs no jobs.
- :class:`JobRunner` is a worker duty: every few seconds it claims the jobs waiting — queued, or
  running without a heartbeat for :data:`STALE_BEATS` heartbeats (its runner died: a crash, a kill, a server
  restart) — in one conditional update per job, so that one worker of one replica wins, and starts
  ``modelport score --resume JOB`` in a process of its own session: a job outlives the server that
  started it, and a job whose server stopped is resumed by the next one.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from modelport.batch.job import ScoreOptions, checked_output, create_job, work_folder
from modelport.batch.plan import input_files
from modelport.batch.store import JobRecord
from modelport.errors import Forbidden, InvalidInput
from modelport.registry.service import Registry
from modelport.settings import Settings

__all__ = ["STALE_BEATS", "JobRunner", "confine", "inside_roots", "submit"]

log = logging.getLogger("modelport.batch")

STALE_BEATS = 5  # a runner silent for this many heartbeats (settings.batch_heartbeat_seconds) is dead


def inside_roots(spec: str, roots: list[Path], *, what: str) -> Path:
    """``spec`` as a path inside one of ``roots`` (symlinks resolved), or Forbidden. A glob's fixed
    part is checked here; the files it matches are checked by :func:`_check_input`."""
    if not roots:
        raise Forbidden(
            "batch jobs over the API are off on this server: the operator sets MODELPORT_BATCH_ROOTS"
        )
    if "\x00" in spec or any(part == ".." for part in Path(spec).parts):
        raise InvalidInput(f"the {what} path may not contain '..'")
    path = Path(spec)
    if not path.is_absolute():
        path = roots[0] / path
    resolved = Path(os.path.realpath(path))
    for root in roots:
        base = Path(os.path.realpath(root))
        if resolved == base or base in resolved.parents:
            return resolved
    raise Forbidden(
        f"the {what} is outside the folders this server may read and write (MODELPORT_BATCH_ROOTS)"
    )


def _check_input(spec: str, roots: list[Path]) -> str:
    glob = any(c in spec for c in "*?[")
    if glob:
        folder = Path(spec).parent
        base = inside_roots(str(folder), roots, what="input")
        pattern = str(base / Path(spec).name)
    else:
        pattern = str(inside_roots(spec, roots, what="input"))
    _, files = input_files(pattern)
    for file in files:  # each file a glob or a folder names, symlinks followed, is inside a root
        inside_roots(str(file), roots, what="input")
    return pattern


def confine(input_spec: str, output_spec: str, roots: list[Path]) -> tuple[str, Path]:
    """INPUT (its files) and OUTPUT resolved inside ``roots``, or Forbidden: checked when a job is
    submitted and again when its runner starts."""
    source = _check_input(input_spec, roots)
    output = inside_roots(output_spec, roots, what="output")
    if output.is_symlink():
        raise Forbidden("the output may not be a symbolic link")
    return source, output


def submit(
    registry: Registry,
    settings: Settings,
    ref: str,
    input_spec: str,
    output_spec: str,
    options: ScoreOptions,
    *,
    actor: str,
) -> JobRecord:
    """Queue a job for the server to run, after checking every path against the roots."""
    source, output = confine(input_spec, output_spec, list(settings.batch_roots))
    checked_output(output, source)
    if options.engine != "local":
        raise InvalidInput(
            "jobs over the API run on this server's engine (local); use the CLI for Dask or Spark"
        )
    job_id = create_job(registry, ref, source, output, options, actor=actor, runner="server")
    return registry.store.jobs.get(job_id)


class JobRunner:
    """Starts the server's queued and orphaned jobs (a worker duty)."""

    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry, self.settings = registry, settings
        self.children: list[subprocess.Popen[bytes]] = []
        self.last = 0.0

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.settings.batch_heartbeat_seconds

    def tick(self) -> list[str]:
        """Claim and start what waits; returns the ids started. Reaps children that ended."""
        self.last = time.monotonic()
        self.children = [child for child in self.children if child.poll() is None]
        jobs = self.registry.store.jobs
        stale = datetime.now(UTC) - timedelta(seconds=STALE_BEATS * self.settings.batch_heartbeat_seconds)
        started = []
        for job in jobs.waiting(stale):
            if not jobs.claim(job, stale):
                continue  # another worker or replica took it
            if job.status == "cancelling":  # its runner died while stopping: it is over
                import shutil

                shutil.rmtree(work_folder(Path(job.output), job.id), ignore_errors=True)
                jobs.cancelled(job.id, "server")
                continue
            self.children.append(self._start(job.id))
            started.append(job.id)
            log.info("batch job %s started (%s)", job.id, job.status)
        return started

    def _start(self, job_id: str) -> subprocess.Popen[bytes]:
        command = [
            sys.executable,
            "-m",
            "modelport.cli.main",
            "--home",
            str(self.settings.home),
            "score",
            "--resume",
            job_id,
        ]
        # its own session: a SIGTERM or a restart of the server does not stop it; it tells its end in
        # the registry (status, error), not on a terminal
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=os.environ.copy(),
        )
