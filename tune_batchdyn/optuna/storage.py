"""``open_study``: join a study in a storage, or create it, from a storage URL or path.

``tune-batchdyn sweep --backend optuna --storage URL`` calls it; so can any worker script. Each
worker passes its own pruner and sampler (Optuna stores neither), opens the same study by name
and runs ``study.optimize``; the storage is the only shared state, so workers may run on other
machines, start late, or restart.

Storage forms:

- ``None``: in memory (one process; gone when it exits);
- a database URL (``sqlite:///sweep.db``, ``postgresql://user:pass@host/db``,
  ``mysql+pymysql://...``): Optuna's ``RDBStorage``, one code path for every database (tests
  run SQLite; PostgreSQL or MySQL is what several machines should share). A SQLite file's
  folder is created. ``postgresql://`` uses psycopg 3 when it is installed, else psycopg2
  (what ``.[postgres]`` installs; SQLAlchemy's own default depends on its version). SQLite
  waits up to ``sqlite_timeout`` seconds for a lock held by another process instead of failing
  at once, and its transactions take the write lock when they begin
  (``immediate_transactions``), so two workers never take the same queued trial;
- any other string or path: a journal file (``JournalStorage(JournalFileBackend(path))``),
  append-only, for processes on one machine or a shared file system without a database server;
  its folder is created (``~`` is the home folder). ``sqlite:name.db`` (a database scheme
  without ``//``) is refused as a typo;
- an ``optuna.storages.BaseStorage``: used as it is.

Kill and restart: a trial is written to storage as it runs (params, each epoch's record and
value) and is finished by one write, so a killed process loses only its running trial; the
completed ones, and the plans and records in them, stay, and ``study.optimize`` in a new process
continues the study. With an RDB storage the killed trial, whose heartbeat (every
``heartbeat_interval`` seconds) stops, is marked ``FAIL`` after ``grace_period`` (default twice
the interval) by the next worker: by ``open_study`` when it joins, and by ``study.optimize``
before each trial. A trial whose worker was killed after taking it but before its first
heartbeat (Optuna never fails a trial without one) is given a heartbeat by ``open_study``, so
it goes stale one grace period later like the others. A failed trial that was enqueued (a grid
point, a beacon, a plan) is then enqueued again (``enqueue.requeue_failed``, the storage's
stale-trial callback), so its configuration still runs once; a finished trial is never run
again. The journal storage has no heartbeat, so there a killed trial stays ``RUNNING``.
``RetryFailedTrialCallback`` is not added: it copies the failed trial's user attributes, and so
its partial records, into the retry.

A path to an existing SQLite file (``--storage sweep.db``) is refused, naming the URL to use
(``sqlite:///sweep.db``), rather than read as a journal. ``existing_storage`` opens a storage
only to read it (``tune-batchdyn plot``): a missing database or journal file is an error, not
created empty.

Example::

    study = open_study("sqlite:///sweep.db", "digits-mlp", pruner=MeasurePruner())
    study.optimize(make_objective("digits_mlp"), n_trials=20, callbacks=[RerouteCallback()])
    print(decisions_line(study))
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import warnings
from typing import Any

import optuna
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from tune_batchdyn.errors import ConfigError, check_choice
from tune_batchdyn.optuna.enqueue import requeue_failed
from tune_batchdyn.optuna.pruner import MeasurePruner

#: Seconds between a running trial's heartbeats in an RDB storage.
HEARTBEAT_INTERVAL = 60
#: Seconds a SQLite connection waits for another process's lock.
SQLITE_TIMEOUT = 60.0


def open_study(storage: str | os.PathLike | BaseStorage | None = None,
               study_name: str | None = None, *, direction: str = "minimize",
               pruner: BasePruner | None = None, sampler: BaseSampler | None = None,
               heartbeat_interval: int | None = HEARTBEAT_INTERVAL,
               grace_period: int | None = None,
               sqlite_timeout: float = SQLITE_TIMEOUT) -> optuna.Study:
    """The study ``study_name`` in ``storage``, created if it does not exist yet.

    ``study_name`` is required for a persistent storage (without it every worker would create a
    study of its own). ``heartbeat_interval`` / ``grace_period`` (seconds; ``None``: no
    heartbeat) apply to RDB storages; the study's stale trials are failed (and requeued) at once.
    A study found with the other direction is an error (Optuna would load it silently), and so
    is a ``MeasurePruner`` with ``maximize``."""
    check_choice("direction", direction, ("minimize", "maximize"))
    if isinstance(pruner, MeasurePruner):
        pruner.check_direction(direction)
    _check_form(storage)
    if storage is not None and not study_name:
        raise ConfigError(f"study_name={study_name!r} is not accepted with storage={storage!r}; "
                          "name the study so that every worker joins the same one.")
    opened = make_storage(storage, heartbeat_interval=heartbeat_interval,
                          grace_period=grace_period, sqlite_timeout=sqlite_timeout)
    study = optuna.create_study(storage=opened, study_name=study_name, direction=direction,
                                pruner=pruner, sampler=sampler, load_if_exists=True)
    stored = study.direction.name.lower()
    if stored != direction:
        raise ConfigError(f"direction={direction!r} is not accepted: study {study_name!r} in "
                          f"{storage!r} was created to {stored}; pass direction={stored!r}.")
    if isinstance(opened, RDBStorage) and opened.heartbeat_interval is not None:
        fail_stale_trials(study, opened)
    return study


def fail_stale_trials(study: optuna.Study, storage: RDBStorage) -> None:
    """Fail the study's trials whose heartbeat has been silent past the grace period (the
    storage's callback requeues them), as ``study.optimize`` does before each trial, also when
    no trial follows; give a running trial that never beat a heartbeat, so that it goes stale
    in turn (a live one's own heartbeat thread overwrites it)."""
    with warnings.catch_warnings():  # "experimental" in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    for trial_id in _never_beat(storage, storage.get_study_id_from_name(study.study_name)):
        storage.record_heartbeat(trial_id)


def _never_beat(storage: RDBStorage, study_id: int) -> list[int]:
    """Ids of the study's running trials without a heartbeat (Optuna's schema: no public
    method reads heartbeats)."""
    from sqlalchemy import text

    query = text("SELECT trial_id FROM trials WHERE study_id = :study AND state = 'RUNNING' "
                 "AND trial_id NOT IN (SELECT trial_id FROM trial_heartbeats)")
    with storage.engine.connect() as connection:
        return [row[0] for row in connection.execute(query, {"study": study_id})]


#: The storage forms, for error messages.
ACCEPTED_FORMS = ("a database URL (sqlite:///sweep.db, postgresql://user@host/db), a journal "
                  "file path (runs/sweep.journal), or None (in memory)")


def _check_form(storage: object) -> None:
    """Refuse what is no storage form at all (an empty string, a number)."""
    if storage is None or isinstance(storage, BaseStorage):
        return
    if not isinstance(storage, (str, os.PathLike)) or not os.fspath(storage):
        raise ConfigError(f"storage={storage!r} is not accepted; use {ACCEPTED_FORMS}.")


def existing_storage(storage: str | os.PathLike) -> BaseStorage:
    """The storage ``storage`` names (any form of ``make_storage``), to read studies from; a
    SQLite or journal file that does not exist is an error, not created empty."""
    location = os.fspath(storage) if isinstance(storage, (str, os.PathLike)) else ""
    path = (_sqlite_file(location) if location.startswith("sqlite")
            else "" if "://" in location else os.path.expanduser(location))
    if path and path != ":memory:" and not os.path.isfile(path):
        raise ConfigError(f"storage={location!r}: there is no file {path!r} to read a study "
                          "from.")
    return make_storage(storage, heartbeat_interval=None)


def make_storage(storage: str | os.PathLike | BaseStorage | None, *,
                 heartbeat_interval: int | None = HEARTBEAT_INTERVAL,
                 grace_period: int | None = None,
                 sqlite_timeout: float = SQLITE_TIMEOUT) -> BaseStorage | None:
    """The Optuna storage for one of the forms in the module docstring (``None``: in memory)."""
    if storage is None or isinstance(storage, BaseStorage):
        return storage
    _check_form(storage)
    if heartbeat_interval is not None and (not isinstance(heartbeat_interval, int)
                                           or heartbeat_interval < 1):
        raise ConfigError(f"heartbeat_interval must be None or an integer >= 1 (seconds), but "
                          f"got {heartbeat_interval=}.")
    location = os.fspath(storage)
    if "://" not in location:
        if _URL_SCHEME.match(location):
            raise ConfigError(f"storage={location!r} is not accepted: a URL needs '://' (e.g. "
                              "sqlite:///sweep.db; sqlite:////abs/path.db); or give a journal "
                              "file path.")
        path = os.path.expanduser(location)
        if os.path.isdir(path):
            raise ConfigError(f"storage={location!r} is a folder; give a file in it: a journal "
                              f"({os.path.join(location, 'sweep.journal')}) or a SQLite database "
                              f"(sqlite:///{os.path.join(location, 'sweep.db')}).")
        _refuse_sqlite_file(path, location)
        if not os.path.exists(path) and path.lower().endswith(_DATABASE_SUFFIXES):
            raise ConfigError(f"storage={location!r} would be a journal file named like a "
                              f"database; for SQLite use storage='sqlite:///{location}', for a "
                              "journal another name (e.g. runs/sweep.journal).")
        _make_folder(path, location)
        try:
            return JournalStorage(JournalFileBackend(path))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"storage={location!r} is not an Optuna journal file "
                              f"({_cause(err)}); give a database URL or a journal file "
                              "path.") from err
    given, location = location, _with_installed_driver(location)
    sqlite = location.startswith("sqlite")
    if sqlite:
        if _sqlite_file(location) in ("", ":memory:"):
            raise ConfigError(f"storage={given!r} names no database file: an in-memory SQLite "
                              "database is not shared between the sweep's connections; use "
                              "sqlite:///path/to/sweep.db, or no storage for a study in memory.")
        _make_folder(_sqlite_file(location), given)
    # SQLite: the driver's own transaction handling off, so that ``immediate_transactions``
    # decides how each transaction begins
    engine_kwargs = ({"connect_args": {"timeout": float(sqlite_timeout), "isolation_level": None}}
                     if sqlite else {})
    try:
        with warnings.catch_warnings():  # the heartbeat is "experimental" in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            rdb = RDBStorage(location, engine_kwargs=engine_kwargs,
                             heartbeat_interval=heartbeat_interval,
                             grace_period=grace_period if heartbeat_interval is not None else None,
                             heartbeat_stale_trial_callback=requeue_failed)
    except ImportError as err:
        raise ConfigError(f"storage={given!r}: the database driver it names is not installed "
                          "(PostgreSQL: pip install -e '.[postgres]'; MySQL: pip install pymysql "
                          "and a mysql+pymysql:// URL).") from err
    except Exception as err:  # SQLAlchemy's errors: a bad URL, an unreachable server, ...
        raise ConfigError(f"storage={given!r} cannot be opened: {_cause(err)}. Accepted: "
                          f"{ACCEPTED_FORMS}.") from err
    if sqlite:
        immediate_transactions(rdb.engine)
    return rdb


#: File names that mean a database: a new journal file is not given one of these.
_DATABASE_SUFFIXES = (".db", ".sqlite", ".sqlite3")

#: A database URL's scheme without its "//" (``sqlite:sweep.db``): a typo, not a journal file.
_URL_SCHEME = re.compile(r"^(sqlite|postgresql|postgres|mysql|mariadb|oracle|mssql)(\+\w+)?:",
                         re.IGNORECASE)


def _with_installed_driver(url: str) -> str:
    """``postgresql://`` with the PostgreSQL driver that is installed: psycopg 3, else
    psycopg2 (SQLAlchemy's default driver for it changed between versions)."""
    if not url.startswith("postgresql://"):
        return url
    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}://" + url[len("postgresql://"):]
    return url


def _refuse_sqlite_file(path: str, storage: str) -> None:
    """Refuse a journal path that names a SQLite database (``--storage sweep.db``)."""
    try:
        with open(path, "rb") as file:
            header = file.read(16)
    except OSError:  # missing (a new journal) or unreadable (the journal backend says so)
        return
    if header == b"SQLite format 3\x00":
        raise ConfigError(f"storage={storage!r} is a SQLite database, not a journal file; use "
                          f"storage='sqlite:///{path}'.")


def _sqlite_file(url: str) -> str:
    """The database file of a SQLite URL ('' for an in-memory database)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).database or ""
    except Exception as err:
        raise ConfigError(f"storage={url!r} is not a database URL: {_cause(err)}") from err


def _make_folder(path: str, storage: str) -> None:
    """Create the folder of a storage file, as ``--out`` does for its file."""
    folder = os.path.dirname(path)
    if path and path != ":memory:" and folder:
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"storage={storage!r}: cannot create its folder {folder!r} "
                              f"({err.strerror}).") from err


def _cause(err: BaseException) -> str:
    """The first line of an exception's message (SQLAlchemy appends pages of background)."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def immediate_transactions(engine: Any) -> None:
    """Begin every SQLite transaction with ``BEGIN IMMEDIATE`` (the write lock at once).

    Optuna takes a queued trial by reading that it is WAITING and writing RUNNING in one
    transaction with ``SELECT ... FOR UPDATE``, which SQLite ignores; with the driver's deferred
    ``BEGIN`` two processes could both read WAITING and both run the trial ("Cannot tell a
    COMPLETE trial" in the slower one). Taking the lock at ``BEGIN`` makes that read-and-write
    atomic across processes (SQLAlchemy's recipe for serializable pysqlite transactions)."""
    from sqlalchemy import event

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
