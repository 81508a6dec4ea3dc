"""Storage and scale: open_study's forms, worker processes sharing one SQLite study and one
PostgreSQL study (with the pruner and the reroute callback), and a worker killed mid-study,
then the study resumed.

The worker processes start together in one module fixture, so their imports overlap."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import optuna
import pytest
from _postgres import postgres_server

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.optuna import (
    DUPLICATE_ATTR,
    PLAN_KEY_ATTR,
    REPLAY_ATTR,
    count_decisions,
    enqueue_replay,
    make_objective,
    open_study,
)
from tune_batchdyn.predict.synthetic import synthetic_records
from tune_batchdyn.records import records_from_optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)
State = optuna.trial.TrialState

NQM = {"dataset": "nqm", "model": "nqm", "epochs": 5,
       "dataset_options": {"samples_per_epoch": 3200, "dim": 200, "bins": 10}}
SPACE = {"batch_size": [16, 64, 256], "lr": [0.05, 0.2]}

BEACONS = {"n_configs": 12, "n_seeds": 1, "epochs": 5, "seed": 2, "diverging": 0.0}

SHARED_WORKER = textwrap.dedent(f"""
    import sys
    import optuna
    from tune_batchdyn.optuna import (REPLAY_ATTR, MeasurePruner, RerouteCallback,
                                      make_objective, open_study, replay_objective)
    from tune_batchdyn.predict.synthetic import synthetic_records
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = MeasurePruner(n_startup_trials=12, base=optuna.pruners.NopPruner())
    study = open_study(sys.argv[1], "shared", pruner=pruner,
                       sampler=optuna.samplers.RandomSampler(seed=int(sys.argv[2])),
                       heartbeat_interval=None)
    replay = replay_objective(synthetic_records(**{BEACONS!r}))
    live = make_objective(None, **{NQM!r})

    def objective(trial):
        return (replay if REPLAY_ATTR in trial.user_attrs else live)(trial)

    study.optimize(objective, n_trials=8, callbacks=[RerouteCallback(max_plans=2)])
""")

KILLED_WORKER = textwrap.dedent(f"""
    import sys
    import time
    import optuna
    from tune_batchdyn.optuna import make_objective, open_study
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(sys.argv[1], "killed", pruner=optuna.pruners.NopPruner(),
                       heartbeat_interval=1, grace_period=2)
    run = make_objective({SPACE!r}, skip_duplicates=False, **{NQM!r})  # every trial trains

    def slow(trial):
        time.sleep(0.3)
        return run(trial)

    study.optimize(slow, n_trials=10_000)
""")


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    """Two workers on a shared SQLite study (beacon replays queued), one worker to kill."""
    folder = tmp_path_factory.mktemp("storage")
    shared = f"sqlite:///{folder / 'shared.db'}"
    killed = f"sqlite:///{folder / 'killed.db'}"
    enqueue_replay(open_study(shared, "shared", heartbeat_interval=None),
                   synthetic_records(**BEACONS))
    processes = {
        "shared_workers": [
            subprocess.Popen([sys.executable, "-c", SHARED_WORKER, shared, str(seed)])
            for seed in (1, 2)],
        "killed_worker": subprocess.Popen([sys.executable, "-c", KILLED_WORKER, killed]),
    }
    yield {"shared": shared, "killed": killed, **processes}
    for process in [*processes["shared_workers"], processes["killed_worker"]]:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_two_processes_share_one_study(workers):
    """Two workers pop the queued replays of a beacon grid (each exactly once), prune with
    MeasurePruner and reroute: every plan trains at most once, and counts once. (Before
    ``immediate_transactions`` two SQLite workers could take one queued trial: Optuna's
    "Cannot tell a COMPLETE trial" in the slower one, seen on a loaded 2-core machine.)"""
    assert [p.wait(timeout=300) for p in workers["shared_workers"]] == [0, 0]
    check_shared_study(workers["shared"])


def test_two_processes_share_one_postgresql_study():
    """The same two workers on a PostgreSQL server (Optuna's RDB storage over psycopg2), where
    SELECT ... FOR UPDATE takes the queued trial; skipped where no server can be started."""
    with postgres_server() as url:
        enqueue_replay(open_study(url, "shared", heartbeat_interval=None),
                       synthetic_records(**BEACONS))
        processes = [subprocess.Popen([sys.executable, "-c", SHARED_WORKER, url, str(seed)])
                     for seed in (1, 2)]
        try:
            assert [p.wait(timeout=300) for p in processes] == [0, 0]
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
        check_shared_study(url)


def check_shared_study(storage: str) -> None:
    study = open_study(storage, "shared", heartbeat_interval=None)
    trials = study.get_trials()
    finished = [t for t in trials if t.state in (State.COMPLETE, State.PRUNED)]
    assert len(finished) == 16  # 8 per worker
    assert not [t for t in trials if t.state == State.RUNNING]
    replayed = sorted(t.user_attrs[REPLAY_ATTR] for t in trials if REPLAY_ATTR in t.user_attrs)
    assert replayed == sorted(synthetic_records(**BEACONS)["trial_id"].unique())
    trained = [t.user_attrs[PLAN_KEY_ATTR] for t in finished
               if PLAN_KEY_ATTR in t.user_attrs and DUPLICATE_ATTR not in t.user_attrs]
    assert len(trained) == len(set(trained)) >= 1
    keys = {t.user_attrs[PLAN_KEY_ATTR] for t in trials if PLAN_KEY_ATTR in t.user_attrs}
    assert count_decisions(study).enqueued == len(keys)
    table = records_from_optuna(study)
    for trial in finished:
        if DUPLICATE_ATTR not in trial.user_attrs:
            rows = table[table["trial_id"] == str(trial.number)]
            assert rows["epoch"].tolist() == list(range(1, len(trial.intermediate_values) + 1))


def test_killed_worker_loses_nothing_finished(workers):
    process = workers["killed_worker"]
    deadline = time.monotonic() + 300
    completed: list[optuna.trial.FrozenTrial] = []
    reporting = False  # a running trial has reported a step, so its heartbeat is stored
    while not (len(completed) >= 3 and reporting) and time.monotonic() < deadline \
            and process.poll() is None:
        time.sleep(0.05)
        try:
            study = optuna.load_study(study_name="killed", storage=workers["killed"])
        except KeyError:  # the worker has not created it yet
            continue
        completed = study.get_trials(states=(State.COMPLETE,))
        reporting = any(t.intermediate_values for t in study.get_trials(states=(State.RUNNING,)))
    assert len(completed) >= 3 and reporting
    process.kill()
    process.wait()
    before = {t.number: (t.value, t.params, t.user_attrs, t.intermediate_values)
              for t in optuna.load_study(study_name="killed", storage=workers["killed"])
              .get_trials(states=(State.COMPLETE,))}
    time.sleep(2.5)  # past the grace period of the killed trial's last heartbeat

    study = open_study(workers["killed"], "killed", pruner=optuna.pruners.NopPruner(),
                       heartbeat_interval=1, grace_period=2)
    study.optimize(make_objective(SPACE, skip_duplicates=False, **NQM), n_trials=2)
    after = {t.number: (t.value, t.params, t.user_attrs, t.intermediate_values)
             for t in study.get_trials(states=(State.COMPLETE,))}
    assert {n: after[n] for n in before} == before
    assert len(after) == len(before) + 2
    assert not study.get_trials(states=(State.RUNNING,))  # the killed trial was failed
    assert len(records_from_optuna(study)["trial_id"].unique()) >= len(after)


@pytest.mark.parametrize("form", ["memory", "sqlite", "journal"])
def test_open_study_creates_then_joins(tmp_path, form):
    storage = {"memory": None, "sqlite": f"sqlite:///{tmp_path / 'a.db'}",
               "journal": tmp_path / "a.journal"}[form]
    name = None if form == "memory" else "joined"
    objective = make_objective(SPACE, skip_duplicates=False, **NQM)  # every trial trains
    study = open_study(storage, name, heartbeat_interval=None)
    study.optimize(objective, n_trials=2)
    if storage is None:
        return
    again = open_study(storage, name, heartbeat_interval=None)
    again.optimize(objective, n_trials=1)
    reloaded = optuna.load_study(study_name=name, storage=storage if form == "sqlite" else
                                 optuna.storages.JournalStorage(
                                     optuna.storages.journal.JournalFileBackend(str(storage))))
    assert [t.number for t in reloaded.trials] == [0, 1, 2]
    table = records_from_optuna(reloaded)
    assert sorted(table["trial_id"].unique()) == ["0", "1", "2"]
    assert (table.groupby("trial_id")["epoch"].max() == 5).all()


@pytest.mark.parametrize(("storage", "name", "kwargs", "message"), [
    ("sqlite:///x.db", None, {}, "study_name=None"),
    (3, "s", {}, "storage=3"),
    ("sqlite:///x.db", "s", {"heartbeat_interval": 0}, "heartbeat_interval=0"),
    (None, None, {"direction": "down"}, "direction='down'"),
    ("", None, {}, r"storage='' is not accepted; use a database URL"),
    ("sqlite:///", "s", {}, r"storage='sqlite:///' names no database file"),
    ("sqlite:///:memory:", "s", {}, r"names no database file"),
    ("foo://bar", "s", {}, r"storage='foo://bar' cannot be opened: NoSuchModuleError.*Accepted: "
                           r"a database URL"),
])
def test_bad_storage_arguments(storage, name, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        open_study(storage, name, **kwargs)


def test_a_folder_as_storage_is_refused_naming_files_in_it(tmp_path):
    with pytest.raises(ConfigError, match=r"is a folder; give a file in it: a journal "
                                          rf"\({tmp_path}/sweep.journal\)"):
        open_study(str(tmp_path), "s")


def test_joining_with_the_other_direction_is_refused(tmp_path):
    path = tmp_path / "study.journal"
    open_study(path, "errors")
    with pytest.raises(ConfigError, match="created to minimize"):
        open_study(path, "errors", direction="maximize")


JOURNAL_WORKER = textwrap.dedent(f"""
    import sys
    import optuna
    from tune_batchdyn.optuna import MeasurePruner, make_objective, open_study
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(sys.argv[1], "journal", pruner=MeasurePruner(n_startup_trials=2))
    study.optimize(make_objective({SPACE!r}, **{NQM!r}), n_trials=3)
""")


@pytest.mark.slow
def test_two_processes_share_one_journal(tmp_path):
    path = str(tmp_path / "study.journal")
    processes = [subprocess.Popen([sys.executable, "-c", JOURNAL_WORKER, path])
                 for _ in range(2)]
    assert [p.wait(timeout=300) for p in processes] == [0, 0]
    study = open_study(path, "journal")
    assert sorted(t.number for t in study.trials) == list(range(6))
    assert all(t.state in (State.COMPLETE, State.PRUNED) for t in study.trials)


def test_sqlite_transactions_take_the_write_lock_when_they_begin(tmp_path):
    """A second connection cannot begin while the first holds a transaction: the read-then-
    write of a queued trial cannot interleave with another process's."""
    import sqlite3

    from tune_batchdyn.optuna.storage import make_storage

    path = tmp_path / "lock.db"
    storage = make_storage(f"sqlite:///{path}", heartbeat_interval=None)
    with storage.engine.connect() as connection:
        with connection.begin():
            connection.exec_driver_sql("SELECT 1")  # a read only: immediate mode still locks
            other = sqlite3.connect(path, timeout=0.05, isolation_level=None)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            other.close()


def test_storage_files_get_their_folders(tmp_path):
    open_study(f"sqlite:///{tmp_path / 'new' / 'sweep.db'}", "s", heartbeat_interval=None)
    open_study(tmp_path / "other" / "sweep.journal", "s")
    assert (tmp_path / "new" / "sweep.db").is_file()
    assert (tmp_path / "other" / "sweep.journal").is_file()


@pytest.mark.parametrize(("storage", "message"), [
    ("sqlite:sweep.db", r"storage='sqlite:sweep.db' is not accepted: a URL needs '://'"),
    ("mysql://user@nohost/db", r"storage='mysql://user@nohost/db': the database driver it "
                               r"names is not installed \(PostgreSQL: pip install -e "
                               r"'.\[postgres\]'; MySQL: pip install pymysql"),
    ("nosuchdb://x/y", r"storage='nosuchdb://x/y' cannot be opened: NoSuchModuleError: "),
])
def test_storages_that_cannot_be_opened_fail_in_one_line(storage, message):
    with pytest.raises(ConfigError, match=message) as caught:
        open_study(storage, "s", heartbeat_interval=None)
    assert "\n" not in str(caught.value)


def test_plain_postgresql_urls_use_the_installed_driver(monkeypatch):
    from tune_batchdyn.optuna import storage

    installed = {"psycopg2"}
    monkeypatch.setattr(storage.importlib.util, "find_spec",
                        lambda name: object() if name in installed else None)
    url = "postgresql://u:p@host/db"
    assert storage._with_installed_driver(url) == "postgresql+psycopg2://u:p@host/db"
    installed.add("psycopg")  # psycopg 3 first, whatever SQLAlchemy's default
    assert storage._with_installed_driver(url) == "postgresql+psycopg://u:p@host/db"
    installed.clear()  # none: SQLAlchemy's own message, in one line (test above)
    assert storage._with_installed_driver(url) == url
    assert storage._with_installed_driver("postgresql+pg8000://h/d") == "postgresql+pg8000://h/d"


def test_journal_names_may_hold_colons_and_start_at_home(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    open_study("run:1.journal", "s")
    open_study("~/sweeps/j.journal", "s")
    assert (tmp_path / "run:1.journal").is_file()
    assert (tmp_path / "home" / "sweeps" / "j.journal").is_file()


def test_a_sqlite_file_given_as_a_path_is_refused_naming_its_url(tmp_path, monkeypatch):
    """The review's ``--storage plain.db``: a raw UnicodeDecodeError (read as a journal)."""
    monkeypatch.chdir(tmp_path)
    open_study("sqlite:///plain.db", "s", heartbeat_interval=None)
    before = (tmp_path / "plain.db").read_bytes()
    with pytest.raises(ConfigError) as caught:
        open_study("plain.db", "s")
    assert str(caught.value) == ("storage='plain.db' is a SQLite database, not a journal file; "
                                 "use storage='sqlite:///plain.db'.")
    assert (tmp_path / "plain.db").read_bytes() == before
    (tmp_path / "other.bin").write_bytes(b"\xfb\x00not json\n")
    with pytest.raises(ConfigError, match=r"storage='other.bin' is not an Optuna journal file "
                                          r"\(UnicodeDecodeError: "):
        open_study("other.bin", "s")
    # a new file named like a database is not made a journal
    with pytest.raises(ConfigError, match=r"storage='runs/new.db' would be a journal file named "
                                          r"like a database; for SQLite use "
                                          r"storage='sqlite:///runs/new.db'"):
        open_study("runs/new.db", "s")
    assert not (tmp_path / "runs").exists()
