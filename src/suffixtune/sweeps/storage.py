"""The Optuna storage a sweep runs on: SQLite by default, PostgreSQL (or any SQLAlchemy URL) for many machines."""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from ..errors import ConfigError

HEARTBEAT_INTERVAL_S = 30
GRACE_PERIOD_S = 120
CONNECT_TIMEOUT_S = 10
SCHEMA_LOCK_KEY = 0x5355_4646  # any fixed 64-bit key; this one spells SUFF
SCHEMA_LOCK_TIMEOUT_S = 120


class StorageError(ConfigError):
    """The storage URL is malformed or its database cannot be reached."""


def default_storage_url(output_dir: str | os.PathLike) -> str:
    return f"sqlite:///{Path(output_dir).resolve() / 'sweep.db'}"


def masked(url: str) -> str:
    """The URL with its password replaced by ***, for messages and logs."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url.split("@")[-1] if "@" in url else url


def open_storage(
    url: str, heartbeat_interval: int | None = HEARTBEAT_INTERVAL_S, grace_period: int | None = GRACE_PERIOD_S
) -> RDBStorage:
    """Connect now, so an unreachable or malformed URL fails before any run starts, naming the URL (password masked).

    With a heartbeat, a trial whose worker stops beating for `grace_period` seconds is failed by the next worker
    that looks, and enqueued again once (Optuna's RetryHeartbeatStaleTrialCallback).
    """
    try:
        dialect = sqlalchemy.engine.make_url(url).get_backend_name()
    except sqlalchemy.exc.ArgumentError:
        raise StorageError(f"storage URL {masked(url)!r} is not a database URL; use sqlite:///PATH/sweep.db or "
                           "postgresql://USER:PASSWORD@HOST/DB") from None
    if dialect == "sqlite":
        database = sqlalchemy.engine.make_url(url).database
        if database and not Path(database).parent.is_dir():
            raise StorageError(f"storage {masked(url)}: directory {Path(database).parent} does not exist")
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True}
    heartbeat = {}
    if heartbeat_interval:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=3)
        heartbeat = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period,
                     "heartbeat_stale_trial_callback": retry}
    logging.getLogger("optuna").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = connect(url, engine_kwargs, heartbeat)
    except ImportError as error:
        raise StorageError(f"storage {masked(url)}: its database driver is not installed ({error.__cause__ or error}); "
                           "for PostgreSQL: pip install 'suffixtune[postgres]'") from None
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as error:
        reason = str(getattr(error, "orig", None) or error.__cause__ or error).strip().splitlines()[0]
        raise StorageError(f"cannot open storage {masked(url)}: {reason}") from None
    if dialect == "sqlite":
        serialize_sqlite_transactions(storage.engine)
    return storage


def connect(url: str, engine_kwargs: dict, heartbeat: dict, attempts: int = 5) -> RDBStorage:
    """RDBStorage, with its tables created by one worker at a time.

    Workers starting together on an empty database race to create Optuna's tables; PostgreSQL then refuses the
    loser's CREATE TABLE (a duplicate table, or a unique violation in pg_type). On PostgreSQL a transaction-scoped
    advisory lock (released at commit even behind a connection pooler) makes creation one at a time; a loser that
    still collides, with a process that creates tables without the lock, tries again once the tables exist.
    """

    def create() -> RDBStorage:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: in Optuna since 2.9
            if sqlalchemy.engine.make_url(url).get_backend_name() != "postgresql":
                return RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
            engine = sqlalchemy.create_engine(url, **engine_kwargs)
            try:
                with engine.begin() as connection:
                    connection.execute(sqlalchemy.text(f"SET LOCAL lock_timeout = '{SCHEMA_LOCK_TIMEOUT_S}s'"))
                    connection.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
                    return RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
            finally:
                engine.dispose()

    for attempt in range(attempts - 1):
        try:
            return create()
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            time.sleep(0.2 * (attempt + 1))
    return create()


def serialize_sqlite_transactions(engine: sqlalchemy.Engine) -> None:
    """Make each SQLite transaction take the write lock when it begins (BEGIN IMMEDIATE).

    Python's sqlite3 begins a transaction only at the first write, so two workers could both read a trial as
    WAITING and both claim it. Taking the lock at BEGIN makes Optuna's read-check-write claim atomic, as
    SELECT ... FOR UPDATE does on PostgreSQL.
    """

    @sqlalchemy.event.listens_for(engine, "connect")
    def _connect(connection, _record):
        connection.isolation_level = None  # let SQLAlchemy, not the driver, issue BEGIN
        connection.execute("PRAGMA journal_mode=WAL")

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()
