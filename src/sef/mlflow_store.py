"""MLflow's SQLite store of a run: made or upgraded aside and renamed into place, opened under a
lock beside it, and what is wrong with a broken one said in one line (:class:`sef.trackers.
MLflowRun` uses it). MLflow and its packages are imported only when a store is opened."""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from sef.errors import ConfigError
from sef.outputs import linked_lock, open_unlinked
from sef.text import counted, gist

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

NOT_SQLITE = "file is not a database"  # SQLite's words for a file of something else


def client(uri: str, own: bool) -> Any:
    """MLflow's client of the store ``uri``, opened while the caller holds its lock
    (:func:`store_lock`, which also covers the experiment and run it makes): a SQLite file
    that is missing made aside (:func:`make_store`), a run folder's ``own`` store brought to
    this MLflow's schema aside (:func:`renew`), and a broken one said in one line
    (:func:`opened`)."""
    path = sqlite_file(uri)
    if path is not None and not path.exists():
        make_store(path)
    elif own:  # DIR/mlflow/mlflow.db, that run's alone
        renew(path)
    return opened(uri)


def make_store(path: Path, upgrade: bool = False) -> None:
    """MLflow's SQLite store ``path`` made (or with ``upgrade``, a copy of it upgraded to this
    MLflow's schema) aside and renamed in place: MLflow takes seconds to create or upgrade its
    tables, and a run stopped then (Ctrl-C) left a half-made store that refused every later run
    into it ("table secrets already exists"). Where stores are shared, the caller holds the
    store's lock (a store made aside beside it may be another run's)."""
    from mlflow.tracking import MlflowClient

    for stale in path.parent.glob(f"{path.name}.*.partial"):  # what a stopped run left
        stale.unlink()
    # a name of its own (MLflow keeps an engine per store it opened), made as SQLite would make
    # the store, readable by the group where the umask lets it (a team's shared store)
    aside = path.parent / f"{path.name}.{secrets.token_hex(4)}.partial"
    path.parent.mkdir(parents=True, exist_ok=True)  # as MLflow does
    try:
        os.close(os.open(aside, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except OSError as error:  # said of the store, not of its name aside
        raise OSError(error.errno, error.strerror, str(path)) from None
    try:
        if upgrade:
            shutil.copyfile(path, aside)
        MlflowClient(tracking_uri=sqlite_uri(aside.resolve())).search_experiments(max_results=1)
    except BaseException:  # Ctrl-C, or MLflow's refusal: the store is left as it was
        aside.unlink(missing_ok=True)
        raise
    os.replace(aside, path)


def renew(path: Path) -> None:
    """Run folder's own SQLite store ``path`` brought to this MLflow's schema aside, where MLflow
    would make or upgrade its tables in place: made anew where it holds no runs (its making cut
    short by a run of an older sef, where MLflow stopped at the first table made, "table ...
    already exists"), upgraded on a copy where it holds runs (MLflow upgrades an older schema
    by itself, and a stop then left the store half upgraded). Where MLflow refuses, the store is
    left for :func:`opened` to say what is wrong."""
    try:
        revision, runs = _store_contents(path)
    except sqlite3.DatabaseError:  # no store at all: MLflow says what is wrong
        return
    if revision != _migrations().get_current_head():
        with contextlib.suppress(Exception):
            make_store(path, upgrade=runs > 0)


def opened(uri: str) -> Any:
    """MLflow's client of the store ``uri``, which it opens (making or upgrading its tables);
    ConfigError in one line where a SQLite store is broken (half made, of another MLflow's
    schema, no SQLite file), which MLflow said in SQLAlchemy's words and SQL statement."""
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # MLflow opens the store at the first call
        return client
    except Exception as error:  # SQLAlchemy's, Alembic's, MLflow's
        path = sqlite_file(uri)
        fault = _store_fault(path, uri, error) if path and path.is_file() else None
        if fault is None:
            raise
        raise ConfigError(f"run.loggers=mlflow: the MLflow store {path} {fault}") from None


def _store_fault(path: Path, uri: str, error: Exception) -> str | None:
    """What is wrong with the SQLite store ``path`` (``uri``) that MLflow could not open
    (``error``), read from its schema's revision (Alembic's) and its runs; None where neither its
    file nor its schema is at fault."""
    from mlflow.version import VERSION

    try:
        revision, runs = _store_contents(path)
    except sqlite3.DatabaseError as problem:
        if str(problem) != NOT_SQLITE:  # a file it may not read, say: MLflow's words say so
            return None
        return (
            f"is no SQLite database ({problem}); move it aside (mv {path} {path}.broken) or "
            f"point MLFLOW_TRACKING_URI at another store"
        )
    scripts = _migrations()
    head = scripts.get_current_head()
    if revision == head:
        return None
    if revision is not None and not _known(scripts, revision):
        return (
            f"was made by a newer MLflow (its schema {revision} is unknown to mlflow "
            f"{VERSION}); upgrade MLflow (pip install -U mlflow-skinny), or log without mlflow"
        )
    if "mlflow db upgrade" in str(error):  # every table there, of an older MLflow's schema
        return (
            f"has an older MLflow's schema ({revision}; mlflow {VERSION} writes {head}); back "
            f"it up, then upgrade it: mlflow db upgrade {uri}"
        )
    why = gist(getattr(error, "orig", None) or error)  # SQLite's words, not SQLAlchemy's SQL
    if runs == 0:
        return (
            f"is half made ({why}), as a run stopped while MLflow made its tables leaves it, "
            f"and holds no runs; remove it (rm {path}), then run again"
        )
    return (
        f"holds {counted(runs, 'run')} but its tables were left half upgraded to mlflow "
        f"{VERSION}'s schema ({why}), as a run stopped while MLflow upgraded them leaves them; "
        f"restore it from a backup, or move it aside (mv {path} {path}.broken) to start anew"
    )


def _store_contents(path: Path) -> tuple[str | None, int]:
    """The schema revision of the SQLite store ``path`` (None where it has none yet) and how
    many runs it holds; sqlite3.DatabaseError where it is no SQLite database."""
    with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        revision = None
        if "alembic_version" in tables:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = row[0] if row else None
        runs = db.execute("SELECT count(*) FROM runs").fetchone()[0] if "runs" in tables else 0
    return revision, runs


@functools.cache
def _migrations() -> Any:
    """Alembic's view of MLflow's schema migrations: the revisions this MLflow knows."""
    import mlflow.store.db_migrations
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(Path(mlflow.store.db_migrations.__file__).parent))


def _known(scripts: Any, revision: str) -> bool:
    """Whether ``revision`` is one of this MLflow's schemas."""
    try:
        return scripts.get_revision(revision) is not None
    except Exception:  # Alembic's CommandError, ResolutionError: a revision it does not know
        return False


def sqlite_uri(path: Path) -> str:
    """The URI of the SQLite file ``path`` for MLflow, quoted: SQLAlchemy reads ``%XX`` in it as
    an escape and ``?`` as the start of its options (a run folder named ``lr 10%25`` or ``why?``
    put its store in another folder)."""
    return f"sqlite:///{quote(str(path), safe='/:' + os.sep)}"


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """While MLflow opens a SQLite store, hold ``STORE.sef-lock`` beside it (flock; Windows has
    none): runs started at once into one new store raced to create its tables and left it broken
    for every later run ("table _alembic_tmp_... already exists"), and two runs could both
    create the experiment. Other stores (a server, a database server) take care of themselves."""
    path = sqlite_file(uri)
    lock = _locked(path.parent / f"{path.name}.sef-lock") if path and fcntl else None
    try:
        yield
    finally:
        if lock is not None:
            os.close(lock)  # and with it the lock


def _locked(path: Path) -> int | None:
    """A descriptor of ``path``, locked, waiting for its holder; None where it cannot be (a
    folder this user may not write, a file system without locks), which leaves the store to
    MLflow, whose own error then says what is wrong; ConfigError where ``path`` is a link, never
    opened (it would make or write the file it points to). Not filelock: it has no "go on
    unlocked" where the file system cannot lock, it waits or raises there instead."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # as MLflow does
        lock = open_unlinked(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)  # closed by store_lock
    except OSError:
        linked = linked_lock(path, "the lock of the MLflow store beside it", "run")
        if linked is not None:
            raise ConfigError(f"run.loggers=mlflow: {linked}") from None
        return None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
    except OSError:
        os.close(lock)
        return None
    return lock


def sqlite_file(uri: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` URI (its ``%XX`` escapes read, its options dropped); None
    for another store or SQLite in memory."""
    if not uri.startswith("sqlite:///"):
        return None
    path = unquote(uri.removeprefix("sqlite:///").partition("?")[0])
    return Path(path) if path and path != ":memory:" else None
