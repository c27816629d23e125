"""The input of a batch job, cut into chunks that can each be read alone (docs/batch.md).

- CSV: one pass over each file computes its SHA-256, counts its lines and records the byte offset of
  every ``chunk_rows``-th line start; a chunk is that byte range, parsed by pyarrow with the header's
  names and the signature's types (numeric features float64, text features and pass-through columns
  text, so ``000123`` stays ``000123``).
- Parquet: consecutive row groups of one file, up to ``chunk_rows`` rows a chunk (a row group larger
  than that is one chunk: the writer chose it); the digest is the files' SHA-256.

The plan is a pure function of the input's bytes: a resumed job plans the same chunks from the same
digest. Every check that can fail on the input's shape runs here, before anything is scored.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from modelport.errors import FileMissing, InputMismatch, InvalidInput
from modelport.signature import Signature

__all__ = ["Chunk", "Plan", "plan_input", "read_chunk"]

_BLOCK = 4 << 20  # bytes read at a time while planning a CSV
# A chunk is read whole: the input's own layout must not make one bigger than this (a CSV "row" of
# gigabytes without a line break, a Parquet row group of billions of rows). Checked while planning.
MAX_CHUNK_BYTES = 1 << 30
_NAMED = 20  # column names listed in a message at most
Kind = Literal["csv", "parquet"]


@dataclass(frozen=True, slots=True)
class Chunk:
    """Rows ``first_row .. first_row + rows`` of the input (0-based, counted over all its files): the
    byte range ``start..stop`` of a CSV file or the row groups ``start..stop`` of a Parquet file."""

    index: int
    file: int  # position in Plan.files
    start: int
    stop: int
    first_row: int
    rows: int


@dataclass
class Plan:
    kind: Kind
    files: list[Path]
    columns: list[str]  # the input's columns (a CSV header, a Parquet schema)
    digest: str  # SHA-256 over the files' own digests, in order
    rows: int
    chunks: list[Chunk] = field(default_factory=list)

    def describe(self) -> str:
        where = str(self.files[0]) if len(self.files) == 1 else f"{len(self.files)} files"
        return f"{where} ({self.rows:,} row(s), {self.kind})"


def input_files(spec: str) -> tuple[Kind, list[Path]]:
    """The files an INPUT names: a file, a folder (its ``*.parquet`` or ``*.csv`` files) or a glob, in
    name order; all of one kind."""
    path = Path(spec)
    if any(c in spec for c in "*?["):
        files = [Path(p) for p in sorted(glob.glob(spec)) if Path(p).is_file()]
        if not files:
            raise FileMissing(f"no file matches {spec!r}")
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in (".csv", ".parquet"))
        if not files:
            raise FileMissing(f"folder {spec!r} has no .csv or .parquet file")
    elif path.is_file():
        files = [path]
    else:
        raise FileMissing(f"input {spec!r} does not exist")
    kinds = {p.suffix.lower() for p in files}
    if len(kinds) > 1:
        raise InvalidInput(
            f"input {spec!r} mixes {' and '.join(sorted(kinds))} files: score one kind at a time"
        )
    suffix = kinds.pop()
    if suffix == ".csv":
        return "csv", files
    if suffix in (".parquet", ".pq"):
        return "parquet", files
    raise InvalidInput(f"input {spec!r}: unsupported file type {suffix or '(none)'!r}; use .csv or .parquet")


def plan_input(spec: str, chunk_rows: int) -> Plan:
    """Plan INPUT into chunks of about ``chunk_rows`` rows."""
    kind, files = input_files(spec)
    if kind == "csv":
        return _plan_csv(files, chunk_rows)
    return _plan_parquet(files, chunk_rows)


def spool_query(url: str, query: str, target: Path, chunk_rows: int, signature: Signature) -> None:
    """Run ``query`` once and keep its result as a Parquet file (row groups of ``chunk_rows``), written
    under a temporary name and renamed: the job's input from then on. A resumed job scores the saved
    result — the rows the query returned when the job started, not what it would return now — and its
    digest is the saved file's. Rows are fetched ``chunk_rows`` at a time (bounded memory)."""
    import pyarrow.parquet as pq
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    numeric = {f.name for f in signature.features if f.numeric}
    try:
        engine = create_engine(url)
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise InvalidInput(f"--database is not a usable database URL: {_brief(exc)[:120]}") from None
    temporary = target.with_name(f".{target.name}.tmp")
    writer: pq.ParquetWriter | None = None
    try:
        with engine.connect() as connection:
            result = connection.execution_options(stream_results=True, max_row_buffer=chunk_rows).execute(
                text(query)
            )
            if not result.returns_rows:
                raise InvalidInput("the query returns no rows: score a SELECT")
            names = list(result.keys())
            schema: pa.Schema | None = None
            while rows := result.fetchmany(chunk_rows):
                columns = {
                    name: pa.array(
                        [row[index] for row in rows],
                        type=pa.float64() if name in numeric else None,
                        from_pandas=True,
                    )
                    for index, name in enumerate(names)
                }
                table = pa.table(columns)
                if schema is None:
                    schema = table.schema
                    writer = pq.ParquetWriter(temporary, schema)
                elif table.schema != schema:
                    table = table.cast(schema)
                assert writer is not None
                writer.write_table(table, row_group_size=chunk_rows)
            if writer is None:  # no rows: an empty file with the query's columns as text
                writer = pq.ParquetWriter(temporary, pa.schema([(n, pa.string()) for n in names]))
            writer.close()
            writer = None
    except SQLAlchemyError as exc:
        temporary.unlink(missing_ok=True)
        message = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise InvalidInput(f"the query failed: {message[:200]}") from None
    except (pa.ArrowException, TypeError, ValueError) as exc:
        temporary.unlink(missing_ok=True)
        raise InputMismatch(
            f"the query's result cannot be read as the signature's columns: {_brief(exc)}"
        ) from None
    finally:
        if writer is not None:
            writer.close()
        engine.dispose()
    temporary.replace(target)


def check_columns(plan: Plan, signature: Signature, keep: Sequence[str], drop: Sequence[str]) -> None:
    """The input must hold every feature and every ``--keep`` column; any other column must be named
    in ``--drop`` (an unexpected column is refused, as online)."""
    present = plan.columns
    duplicated = sorted({c for c in present if present.count(c) > 1})
    if duplicated:
        raise InputMismatch(f"the input has duplicate column(s): {_listed(duplicated)}")
    missing = [n for n in signature.names if n not in present]
    if missing:
        raise InputMismatch(f"the input lacks the feature(s) {_listed(missing)} of the signature")
    absent = [n for n in [*keep, *drop] if n not in present]
    if absent:
        raise InputMismatch(f"--keep/--drop name column(s) the input does not have: {_listed(absent)}")
    overlap = [n for n in keep if n in drop]
    if overlap:
        raise InvalidInput(f"column(s) both kept and dropped: {_listed(overlap)}")
    reserved = [n for n in keep if n in _RESERVED or n in signature.outputs.probability_names]
    if reserved:
        raise InvalidInput(f"--keep column(s) {_listed(reserved)} would clash with the output's own columns")
    extra = [c for c in present if c not in signature.names and c not in keep and c not in drop]
    if extra:
        raise InputMismatch(
            f"the input has column(s) the signature does not: {_listed(extra)}; name them in --keep to "
            "pass them through to the output or in --drop to leave them out"
        )


_RESERVED = {"label", "prediction", "flags", "model", "version", "job_id"}


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_NAMED])
    return shown + (f" and {len(names) - _NAMED} more" if len(names) > _NAMED else "")


# -- CSV --------------------------------------------------------------------------------------------


def _plan_csv(files: list[Path], chunk_rows: int) -> Plan:
    overall = hashlib.sha256()
    chunks: list[Chunk] = []
    columns: list[str] | None = None
    total = 0
    for position, path in enumerate(files):
        digest = hashlib.sha256()
        with path.open("rb") as stream:
            head = stream.readline(1 << 20)
            digest.update(head)
            if not head.endswith(b"\n") and len(head) >= 1 << 20:
                raise InvalidInput(f"{path.name}: the header line is longer than 1 MiB")
            names = _header(head, path)
            if columns is None:
                columns = names
            elif names != columns:
                raise InputMismatch(
                    f"{path.name} has other columns than {files[0].name}: every file must match"
                )
            offset = len(head)
            chunk_start, lines, tail = offset, 0, False
            while block := stream.read(_BLOCK):
                digest.update(block)
                # line ends are counted at C speed; a chunk's last one is located only where a chunk ends
                pos, remaining = 0, block.count(b"\n")
                while lines + remaining >= chunk_rows:
                    need = chunk_rows - lines
                    end = _nth_line_end(block, pos, need)
                    stop = offset + end + 1
                    chunks.append(Chunk(len(chunks), position, chunk_start, stop, total, chunk_rows))
                    total += chunk_rows
                    chunk_start, remaining, lines, pos = stop, remaining - need, 0, end + 1
                lines += remaining
                offset += len(block)
                tail = block[-1:] != b"\n"
            rows = lines + (1 if tail else 0)
            if rows:
                chunks.append(Chunk(len(chunks), position, chunk_start, offset, total, rows))
                total += rows
        overall.update(digest.digest())
    for chunk in chunks:
        if chunk.stop - chunk.start > MAX_CHUNK_BYTES:
            raise InvalidInput(
                f"{files[chunk.file].name}: rows {chunk.first_row + 1:,}–{chunk.first_row + chunk.rows:,} "
                f"take {chunk.stop - chunk.start:,} bytes, more than a chunk may ({MAX_CHUNK_BYTES:,}): "
                "lower --chunk-rows, or the file has lines that never end"
            )
    assert columns is not None
    return Plan("csv", files, columns, overall.hexdigest(), total, chunks)


def _nth_line_end(block: bytes, start: int, n: int) -> int:
    """The position of the ``n``-th ``\\n`` of ``block`` from ``start`` (there are at least ``n``)."""
    piece = 1 << 18
    while True:
        end = min(start + piece, len(block))
        found = block.count(b"\n", start, end)
        if found >= n:
            ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8, count=end - start, offset=start) == 10)
            return start + int(ends[n - 1])
        n -= found
        start = end


def _header(line: bytes, path: Path) -> list[str]:
    try:
        names = next(csv.reader([line.decode("utf-8-sig")]), [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInput(f"{path.name} is not readable CSV: {str(exc)[:120]}") from None
    if not names or not any(n.strip() for n in names):
        raise InvalidInput(f"{path.name} has no header line: the first line must name the columns")
    return names


# -- Parquet ----------------------------------------------------------------------------------------


def _plan_parquet(files: list[Path], chunk_rows: int) -> Plan:
    import pyarrow.parquet as pq

    overall = hashlib.sha256()
    chunks: list[Chunk] = []
    columns: list[str] | None = None
    total = 0
    for position, path in enumerate(files):
        overall.update(_file_digest(path))
        try:
            metadata = pq.ParquetFile(path).metadata
        except (pa.ArrowException, OSError) as exc:
            raise InvalidInput(f"{path.name} is not a readable Parquet file: {str(exc)[:160]}") from None
        names = list(metadata.schema.to_arrow_schema().names)
        if columns is None:
            columns = names
        elif sorted(names) != sorted(columns):
            raise InputMismatch(f"{path.name} has other columns than {files[0].name}: every file must match")
        start, rows = 0, 0
        for group in range(metadata.num_row_groups):
            size = metadata.row_group(group).num_rows
            declared = metadata.row_group(group).total_byte_size
            if declared > MAX_CHUNK_BYTES:
                raise InvalidInput(
                    f"{path.name}: row group {group} holds {declared:,} bytes, more than a chunk may "
                    f"({MAX_CHUNK_BYTES:,}): write the file with smaller row groups"
                )
            if rows and rows + size > chunk_rows:
                chunks.append(Chunk(len(chunks), position, start, group, total, rows))
                total += rows
                start, rows = group, 0
            rows += size
        if rows:
            chunks.append(Chunk(len(chunks), position, start, metadata.num_row_groups, total, rows))
            total += rows
    assert columns is not None
    return Plan("parquet", files, columns, overall.hexdigest(), total, chunks)


def _file_digest(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(_BLOCK):
            digest.update(block)
    return digest.digest()


# -- reading a chunk --------------------------------------------------------------------------------


def read_chunk(plan: Plan, chunk: Chunk, signature: Signature, wanted: Iterable[str]) -> pa.Table:
    """The chunk's ``wanted`` columns: numeric features as float64, everything else as read (CSV: text)."""
    wanted = list(wanted)
    path = plan.files[chunk.file]
    if plan.kind == "csv":
        return _read_csv(plan, path, chunk, signature, wanted)
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path).read_row_groups(
            list(range(chunk.start, chunk.stop)), columns=wanted, use_threads=False
        )
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInput(
            f"{path.name}: row groups {chunk.start}–{chunk.stop - 1} cannot be read: {_brief(exc)}"
        ) from None
    numeric = {f.name for f in signature.features if f.numeric}
    for name in numeric & set(wanted):
        column = table.column(name)
        if not (
            pa.types.is_floating(column.type)
            or pa.types.is_integer(column.type)
            or pa.types.is_boolean(column.type)
        ):
            raise InputMismatch(f"feature {name!r} must be numeric; {path.name} stores it as {column.type}")
    return table


def _read_csv(plan: Plan, path: Path, chunk: Chunk, signature: Signature, wanted: list[str]) -> pa.Table:
    import pyarrow.csv as pacsv

    with path.open("rb") as stream:
        stream.seek(chunk.start)
        data = stream.read(chunk.stop - chunk.start)
    numeric = {f.name for f in signature.features if f.numeric}
    types = {name: (pa.float64() if name in numeric else pa.string()) for name in wanted}
    try:
        return pacsv.read_csv(
            io.BytesIO(data),
            # one block: each column comes back as one array, turned into numbers without a copy
            read_options=pacsv.ReadOptions(
                column_names=plan.columns, use_threads=False, block_size=max(len(data), 1 << 20) + 1
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=wanted, strings_can_be_null=True
            ),
        )
    except pa.ArrowInvalid as exc:
        where = f"{path.name}, rows {chunk.first_row + 1:,}–{chunk.first_row + chunk.rows:,}"
        message = _brief(exc)
        if "conversion error to double" in message:
            raise InputMismatch(f"{where}: a numeric feature holds text: {message}") from None
        raise InvalidInput(f"{where} cannot be read as CSV: {message}") from None


def _brief(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]
