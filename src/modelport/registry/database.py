"""The registry database: engine creation, transactions, schema state — and the one home of SQL
dialect differences.

The store is chosen from the URL scheme. SQLite runs in WAL mode with foreign keys on; writes take
``BEGIN IMMEDIATE`` (so two writers never deadlock upgrading a read lock) and go through one writer lock
per process, readers never wait for writers. PostgreSQL needs nothing special: row locks serialise the
version counter. Everything dialect-specific (upserts, URL normalisation, pragmas) lives here so the
stores read the same on both.

Every store — the registry's and those of releases, monitoring, validation and security, each beside
its package — runs its SQL in a :class:`Transaction` from :meth:`Database.read` or
:meth:`Database.write`. A transaction also does the two things every change makes in that same
transaction: append to the audit chain and bump the registry generation (how servers learn of it).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Engine,
    Insert,
    Table,
    create_engine,
    event,
    inspect,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    SQLAlchemyError,
    StatementError,
)
from sqlalchemy.pool import NullPool

from modelport.errors import Conflict, InvalidInput, MissingExtra, StorageFailure, StoreNotReady, brief
from modelport.optional import install_command, require
from modelport.registry import audit
from modelport.registry.schema import registry_state

if TYPE_CHECKING:
    from alembic.config import Config

# The newest migration. Opening a registry compares the database against this constant instead of
# importing Alembic (a third of a second at every start-up); a test keeps it equal to Alembic's head.
HEAD_REVISION = "0011_webhooks"

__all__ = ["Database", "Transaction"]

_SQLITE_BUSY_SECONDS = 60.0
_MIGRATION_LOCK = 0x6D6F64656C  # "model": PostgreSQL advisory lock key for schema migrations
# Alembic keeps its migration context in module globals: one migration at a time per process.
_MIGRATING = threading.Lock()


def _set_wal(cursor: Any) -> None:
    """Switch to WAL. Converting a brand-new file needs it to itself for a moment, and SQLite answers
    "database is locked" at once (no busy wait) when clients open a new registry together: retry."""
    deadline = time.monotonic() + _SQLITE_BUSY_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _normalise_url(url: str) -> str:
    """Accept the URLs people write (``postgresql://``, ``postgres://``) and pick the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise InvalidInput("the database URL is not a valid SQLAlchemy URL (scheme://user@host/db)") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise InvalidInput(f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql")
    return parsed.render_as_string(hide_password=False)


class Transaction:
    """One open transaction on the registry database (from :meth:`Database.read` or
    :meth:`Database.write`): run statements with ``execute``; in a write transaction,
    :meth:`audit` and :meth:`bump_generation` commit or roll back with everything else."""

    __slots__ = ("connection", "database", "execute")

    def __init__(self, database: Database, connection: Connection) -> None:
        self.database = database
        self.connection = connection
        # The connection's own method, typed rows included: run one statement (a list of parameter
        # sets runs it once per set).
        self.execute = connection.execute

    def audit(self, actor: str, action: str, target: str, *, before: Any = None, after: Any = None) -> None:
        """Append a record to the audit chain (docs/security.md), ``unknown`` standing for no actor."""
        audit.append(
            self.connection,
            actor=actor or "unknown",
            action=action,
            target=target,
            before=before,
            after=after,
            is_sqlite=self.database.is_sqlite,
        )

    def bump_generation(self) -> None:
        """Tell every server that something it routes or checks by changed (it reloads its tables)."""
        self.connection.execute(
            update(registry_state)
            .where(registry_state.c.id == 1)
            .values(generation=registry_state.c.generation + 1)
        )


class Database:
    """An engine plus the transaction discipline the registry relies on."""

    def __init__(self, url: str, lock_timeout: float = _SQLITE_BUSY_SECONDS) -> None:
        """``lock_timeout``: how long a transaction waits for a lock another writer holds before it
        fails with :class:`StoreNotReady` and nothing applied (SQLite's busy timeout and this process's
        writer lock; PostgreSQL's ``lock_timeout``). Servers use a short one so that a change either
        commits before its answer or fails cleanly (docs/security.md)."""
        self.url = _normalise_url(url)
        self.lock_timeout = lock_timeout
        parsed = make_url(self.url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self._writer = threading.Lock() if self.is_sqlite else None
        if parsed.get_driver_name() == "psycopg":
            require("psycopg", "postgres", "a PostgreSQL registry")
        try:
            self.engine: Engine = self._create_engine()
        except ImportError:  # another driver named in the URL (postgresql+psycopg2://…) is missing
            raise MissingExtra(
                f"the database URL {self.describe()} names the driver {parsed.get_driver_name()!r}, which is "
                f"not installed; modelport's is psycopg (postgresql://…): {install_command('postgres')}"
            ) from None
        except (ArgumentError, ValueError, TypeError):
            raise InvalidInput(f"cannot use the database URL {self.describe()}: check its form") from None

    def _create_engine(self) -> Engine:
        if not self.is_sqlite:
            engine = create_engine(self.url, pool_pre_ping=True, pool_size=5, max_overflow=10)
            lock_ms = max(1, int(self.lock_timeout * 1000))

            @event.listens_for(engine, "connect")
            def _on_pg_connect(dbapi_connection: Any, _record: Any) -> None:
                with dbapi_connection.cursor() as cursor:
                    cursor.execute(f"SET lock_timeout = {lock_ms}")  # an int: nothing to quote
                dbapi_connection.commit()

            return engine
        # NullPool: a connection per transaction is cheap for SQLite and makes the file safe to
        # delete or move between tests; WAL keeps readers off the writer's back.
        engine = create_engine(self.url, poolclass=NullPool, connect_args={"timeout": self.lock_timeout})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy's BEGIN below be the only transaction control (pysqlite otherwise
            # begins lazily and in DEFERRED mode).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            _set_wal(cursor)
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            immediate = conn.get_execution_options().get("modelport_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    # -- transactions ---------------------------------------------------------------------------

    @contextmanager
    def translated(self) -> Iterator[None]:
        """Turn database exceptions into modelport errors that carry no SQL and no parameters."""
        try:
            yield
        except OperationalError as exc:
            raise StoreNotReady(
                f"cannot use the registry database {self.describe()}: {brief(exc.orig or exc)}"
            ) from None
        except IntegrityError as exc:
            raise Conflict(
                f"the registry database refused a conflicting change: {brief(exc.orig or exc)}"
            ) from None
        except DBAPIError as exc:
            raise StorageFailure(
                f"the registry database {self.describe()} refused the operation: {brief(exc.orig or exc)}"
            ) from None
        except SQLAlchemyError as exc:
            cause = exc.__cause__ if isinstance(exc, StatementError) and exc.__cause__ else exc
            raise StorageFailure(f"the registry database refused the operation: {brief(cause)}") from None

    @contextmanager
    def _writer_lock(self) -> Iterator[None]:
        if self._writer is None:
            yield
            return
        if not self._writer.acquire(timeout=self.lock_timeout):
            raise StoreNotReady(
                f"the registry database is busy: another change held it for {self.lock_timeout:g} s; "
                "nothing was changed"
            )
        try:
            yield
        finally:
            self._writer.release()

    @contextmanager
    def read(self) -> Iterator[Transaction]:
        """A read transaction (a consistent snapshot on both databases)."""
        with self.translated(), self.engine.connect() as conn, conn.begin():
            yield Transaction(self, conn)

    @contextmanager
    def write(self) -> Iterator[Transaction]:
        """A write transaction: committed on success, rolled back on any exception. On SQLite it
        starts with ``BEGIN IMMEDIATE`` behind this process's writer lock; a lock another writer holds
        longer than ``lock_timeout`` fails it with :class:`StoreNotReady`, nothing applied."""
        with self.translated(), self._writer_lock(), self.engine.connect() as raw:
            conn = raw.execution_options(modelport_write=True)
            with conn.begin():
                yield Transaction(self, conn)

    # -- dialect differences --------------------------------------------------------------------

    def _dialect(self) -> Any:
        """This database's SQLAlchemy dialect module (imported here: PostgreSQL's costs ~35 ms at the
        start of every command on an SQLite home)."""
        if self.is_sqlite:
            from sqlalchemy.dialects import sqlite

            return sqlite
        from sqlalchemy.dialects import postgresql

        return postgresql

    def insert_dialect(self, table: Table) -> Any:
        """This database's ``INSERT`` construct (it has ``on_conflict_do_update``/``…_nothing``)."""
        return self._dialect().insert(table)

    def insert_ignoring_conflict(self, table: Table, values: Mapping[str, Any]) -> Insert:
        """``INSERT … ON CONFLICT DO NOTHING`` in this database's dialect."""
        statement: Insert = self._dialect().insert(table).values(**values).on_conflict_do_nothing()
        return statement

    def upsert(
        self, table: Table, values: Mapping[str, Any] | None, keys: list[str], update: list[str]
    ) -> Insert:
        """``INSERT … ON CONFLICT (keys) DO UPDATE SET update…`` in this database's dialect (without
        ``values``: a statement to execute with a list of rows)."""
        stmt = self._dialect().insert(table)
        if values is not None:
            stmt = stmt.values(**values)
        statement: Insert = stmt.on_conflict_do_update(
            index_elements=keys, set_={column: stmt.excluded[column] for column in update}
        )
        return statement

    # -- schema ---------------------------------------------------------------------------------

    @staticmethod
    def _alembic_config(connection: Connection | None = None) -> Config:
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(resources.files("modelport.registry") / "migrations"))
        config.attributes["connection"] = connection
        return config

    def head_revision(self) -> str:
        return HEAD_REVISION

    def alembic_head(self) -> str | None:
        """The head according to the migration scripts themselves (what ``HEAD_REVISION`` must equal)."""
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def current_revision(self) -> str | None:
        if self.is_sqlite and not self.sqlite_path_exists():
            return None  # do not create an empty database file just by looking
        with self.translated(), self.engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
            return versions[0] if len(versions) == 1 else None

    def sqlite_path_exists(self) -> bool:
        database = make_url(self.url).database
        return database in (None, "", ":memory:") or Path(database).is_file()

    def make_private(self) -> None:
        """SQLite: create the database file owner-only (0600) before SQLite would create it under the
        umask (its -wal and -shm files copy the database file's mode), and take other users' access
        away from an existing one: it holds key digests and the audit log. Nothing for PostgreSQL."""
        database = make_url(self.url).database
        if not self.is_sqlite or database in (None, "", ":memory:"):
            return
        path = Path(database)
        with suppress(FileExistsError, FileNotFoundError):  # exists already; no folder (SQLite says so)
            path.touch(mode=0o600, exist_ok=False)  # an empty file is an empty SQLite database
        for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            try:
                mode = file.stat().st_mode & 0o777
                if mode & 0o007:
                    file.chmod(mode & ~0o007)  # the group's access stays the operator's choice
            except OSError:  # absent, or owned by another user
                pass

    def migrate(self) -> None:
        """Create or upgrade the schema to the newest revision. Idempotent, and safe when several
        processes run it at once: SQLite serialises them with ``BEGIN IMMEDIATE``, PostgreSQL with a
        transaction-scoped advisory lock; the loser then finds the schema current and does nothing."""
        from alembic import command

        with _MIGRATING, self.translated(), self._writer_lock(), self.engine.connect() as raw:
            conn = raw.execution_options(modelport_write=True)
            # Begin before Alembic sees the connection: it then treats the transaction as external and
            # runs every step inside it. Left to itself it commits after each step on SQLite (it
            # assumes no transactional DDL there), which lets a second process slip in between steps
            # and replay one that already ran.
            with conn.begin():
                if not self.is_sqlite:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
                command.upgrade(self._alembic_config(conn), "head")

    def check_schema(self) -> None:
        """Raise :class:`StoreNotReady` unless the schema is exactly at the code's revision."""
        current, head = self.current_revision(), self.head_revision()
        if current == head:
            return
        if current is None:
            raise StoreNotReady(
                f"no modelport registry in {self.describe()}: run `modelport init` to create it"
            )
        raise StoreNotReady(
            f"the registry schema in {self.describe()} is at revision {current}, this modelport needs "
            f"{head}: run `modelport init` to migrate it"
        )

    def describe(self) -> str:
        """The URL with any password hidden, for messages."""
        # Without the query string: it may carry credentials (``?password=…``).
        return make_url(self.url).set(query={}).render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()
