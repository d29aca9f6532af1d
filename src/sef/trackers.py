"""Experiment trackers beside TensorBoard: a Weights & Biases run and an MLflow run per training
run (``run.loggers``), written by rank 0's :class:`sef.engine.log.Logger`.

Each tracker gets the resolved config as parameters, every number of every epoch's record under
its own name (a list per group head as ``NAME/group1``, ``NAME/group2``, ..., as in TensorBoard),
the final report as a summary, and ``best.pt`` with its per-image predictions as files. Both stay
on this machine unless told otherwise: W&B runs offline unless ``WANDB_MODE`` is set, MLflow writes
a SQLite store in ``DIR/mlflow`` unless ``MLFLOW_TRACKING_URI`` is set. ``DIR/trackers.json``
keeps each tracker's run id and the last epoch it holds, so a resumed run goes on in the same
tracker run and first logs the epochs that run lacks.

The clients are imported only when a tracker opens: ``import sef`` and ``sef --help`` never load
them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import numbers
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from sef import extras, outputs
from sef.config import Config, config_to_dict, flatten, setting_said
from sef.errors import ConfigError, OutputError, SEFError, warn
from sef.mlflow_store import client, sqlite_file, sqlite_uri, store_lock
from sef.network import unreachable
from sef.text import gist

TRACKERS = ("wandb", "mlflow")  # the words of run.loggers that name a tracker
STATE_FILE = "trackers.json"
PROJECT = "sef"  # W&B project and MLflow experiment, unless WANDB_PROJECT / MLFLOW_EXPERIMENT_NAME
ONLINE = ("online", "run", "shared")  # the values of WANDB_MODE that send the run to a server


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """Every number of an epoch record but the epoch itself, a list as ``NAME/group1``, ...;
    what is not a number (text, nested lists) is left out."""
    values: dict[str, float] = {}
    for key, value in record.items():
        if isinstance(value, (list, tuple)):
            for g, item in enumerate(value, start=1):
                if isinstance(item, numbers.Real):
                    values[f"{key}/group{g}"] = float(item)
        elif isinstance(value, numbers.Real) and key != "epoch":
            values[key] = float(value)
    return values


def require(loggers: Iterable[str]) -> None:
    """SEFError in one line naming the pip command if a tracker's client is not installed, the
    server a tracker would send its run to (W&B online, ``MLFLOW_TRACKING_URI``) if it takes no
    connection, ``WANDB_DIR`` if it cannot be written, or ``WANDB_PROJECT`` if W&B refuses it."""
    loggers = list(loggers)
    for name in loggers:
        if name in TRACKERS:
            extras.require(name, f"run.loggers={name} (--log {name})")
    if "wandb" in loggers and not _switched_off("wandb"):
        check_wandb_dir(wandb_dir())
        check_wandb_project(os.environ.get("WANDB_PROJECT"))
        check_wandb_server(os.environ.get("WANDB_MODE"))
    if "mlflow" in loggers:
        check_mlflow_ids(os.environ.get("MLFLOW_TRACKING_URI"))
        check_mlflow_file(os.environ.get("MLFLOW_TRACKING_URI"))
        check_mlflow_memory(os.environ.get("MLFLOW_TRACKING_URI"))
        check_mlflow_server(os.environ.get("MLFLOW_TRACKING_URI"))


def check_mlflow_ids(uri: str | None) -> None:
    """ConfigError if ``MLFLOW_EXPERIMENT_ID`` or ``MLFLOW_RUN_ID`` is set without ``uri``
    (MLFLOW_TRACKING_URI): they name an experiment or a run of a store, and the run would log
    into its own, DIR/mlflow/mlflow.db, which holds neither."""
    for setting, what in (("MLFLOW_EXPERIMENT_ID", "an experiment"), ("MLFLOW_RUN_ID", "a run")):
        if os.environ.get(setting) and not uri:
            raise ConfigError(
                f"run.loggers=mlflow: {setting} names {what} of an MLflow store, but without "
                f"MLFLOW_TRACKING_URI the run logs into its own store, DIR/mlflow/mlflow.db; set "
                f"MLFLOW_TRACKING_URI to the store that holds it, or unset {setting}"
            )


def check_mlflow_file(uri: str | None) -> None:
    """ConfigError if ``uri`` is a store under ``~`` (a SQLite file, or a plain path: MLflow's
    file store), which MLflow does not expand: it made a folder named ``~`` in the current one
    and put the store there."""
    path = sqlite_file(uri or "")
    if uri and uri.startswith("~"):
        full = str(Path(uri).expanduser())
    elif path is not None and path.parts[0] == "~":
        full = sqlite_uri(path.expanduser())
    else:
        return
    raise ConfigError(
        f"run.loggers=mlflow: MLFLOW_TRACKING_URI={uri} puts the store in a folder named ~ in "
        f"the current one (MLflow does not expand ~); write the full path: {full}"
    )


def check_mlflow_memory(uri: str | None) -> None:
    """ConfigError if ``uri`` is a SQLite store in memory (``sqlite://``, ``sqlite:///:memory:``),
    which MLflow takes and loses, with everything the run logged, when the process ends."""
    if uri and uri.startswith("sqlite:") and sqlite_file(uri) is None:
        raise ConfigError(
            f"run.loggers=mlflow: MLFLOW_TRACKING_URI={uri} is a SQLite store in memory, lost "
            f"with everything the run logs when it ends; name a file "
            f"(sqlite:////full/path/mlflow.db), or unset it to log into DIR/mlflow/mlflow.db"
        )


def check_mlflow_server(uri: str | None) -> None:
    """ConfigError at once if ``uri`` names an http(s) server that takes no connection within
    10 seconds (refused, an unknown host, no answer): MLflow's client retries for
    about 4 minutes before it says so. A server reached through a proxy is left to MLflow."""
    down = unreachable(uri or "")
    if down:
        raise ConfigError(
            f"run.loggers=mlflow: the MLflow server at {down[0]} (MLFLOW_TRACKING_URI) "
            f"takes no connection ({down[1]}); start it, correct MLFLOW_TRACKING_URI, or "
            f"log without mlflow"
        )


def wandb_dir() -> str | None:
    """``WANDB_DIR`` with ``~`` expanded (as a .env file or a quoted assignment leaves it): W&B
    expands it too, but first makes an empty folder named ``~`` in the current one."""
    folder = os.environ.get("WANDB_DIR")
    return str(Path(folder).expanduser()) if folder else None


def check_wandb_dir(folder: str | None) -> None:
    """ConfigError if ``folder`` (WANDB_DIR) cannot be written, nor made where it is missing:
    W&B then keeps the run in the system's temporary folder, said in a warning among its start
    lines, where an offline run waiting for ``wandb sync`` is lost at the next clean-up."""
    if not folder:
        return
    try:
        outputs.check_writable(Path(folder), folder=True)
    except OutputError as error:
        raise ConfigError(
            f"run.loggers=wandb: WANDB_DIR: {error.problem}; point WANDB_DIR at a folder you "
            f"can write, or unset it to keep the W&B run in DIR/wandb"
        ) from None


def check_wandb_project(project: str | None) -> None:
    """ConfigError if W&B refuses ``project`` (WANDB_PROJECT) as a name (a ``/``, ``#``, ``?``,
    ``%``, ``:`` or ``\\`` in it, more than 128 characters): ``wandb.init`` said so only once the
    data had loaded."""
    if not project:
        return
    import wandb

    try:
        wandb.Settings(project=project)
    except Exception as error:  # W&B's UsageError, or pydantic's
        raise ConfigError(
            f"run.loggers=wandb: WANDB_PROJECT: {gist(error)}; set another name, or unset it to "
            f"log into project {PROJECT}"
        ) from None


def check_wandb_server(mode: str | None) -> None:
    """ConfigError at once if ``mode`` (WANDB_MODE) sends the run to a W&B server that takes no
    connection within 10 seconds: ``wandb.init`` waits its ``init_timeout`` (90 s)
    before it says so. Offline, the default, needs no server."""
    if mode not in ONLINE:
        return
    from wandb.sdk import wandb_setup

    if not hasattr(wandb_setup, "singleton"):  # an older wandb: left to wandb.init
        return
    url = wandb_setup.singleton().settings.base_url  # WANDB_BASE_URL, wandb login --host's
    down = unreachable(url)
    if down:
        raise ConfigError(
            f"run.loggers=wandb: WANDB_MODE={mode} but the W&B server at {down[0]} takes "
            f"no connection ({down[1]}); train with WANDB_MODE=offline and upload the run "
            f"later with wandb sync DIR/wandb/offline-run-*, or log without wandb"
        )


@dataclass
class Final:
    """What a finished run hands its trackers."""

    summary: dict[str, float]  # the final report's numbers (sef.engine.FitResult.summary)
    report: str  # the final report as `sef train` prints it
    files: list[Path]  # best.pt and its per-image predictions, where they exist
    epoch: int  # the last epoch trained


class Tracker(Protocol):
    """One experiment tracker's run, opened with the id of the run to continue (or None)."""

    id: str
    resumed: bool  # whether the run of the id given went on (else a new run was started)

    def epoch(self, record: Mapping[str, Any]) -> None: ...

    def finish(self, final: Final) -> None: ...

    def close(self, finished: bool) -> None: ...


class WandbRun:
    """A Weights & Biases run in DIR/wandb (``WANDB_DIR`` elsewhere), offline unless
    ``WANDB_MODE`` says otherwise; the epoch is the step."""

    def __init__(self, out: Path, config: Config, run_id: str | None):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or PROJECT,
            name=out.name,
            dir=wandb_dir() or str(out),
            mode=os.environ.get("WANDB_MODE") or "offline",
            id=run_id,
            resume="allow" if run_id else None,
            config=None if run_id else config_to_dict(config),
        )
        if run_id:  # a resume may lengthen the run or move its data: the config as it is now
            self.run.config.update(config_to_dict(config), allow_val_change=True)
        self.id, self.resumed = self.run.id, run_id is not None

    def epoch(self, record: Mapping[str, Any]) -> None:
        self.run.log({"epoch": record["epoch"], **scalars(record)}, step=record["epoch"])

    def finish(self, final: Final) -> None:
        self.run.summary.update({**final.summary, "report": final.report})
        if final.files:
            name = f"{self.run.id}-best"
            artifact = self.wandb.Artifact(name, type="model", metadata=dict(final.summary))
            for path in final.files:
                artifact.add_file(str(path))
            self.run.log_artifact(artifact)

    def close(self, finished: bool) -> None:
        self.run.finish(exit_code=0 if finished else 1)


class MLflowRun:
    """An MLflow run in ``MLFLOW_TRACKING_URI``, else in a SQLite store DIR/mlflow/mlflow.db
    with its files in DIR/mlflow/artifacts; the epoch is the step. ``MLFLOW_RUN_ID`` names the
    run to log into and ``MLFLOW_EXPERIMENT_ID`` the experiment of a new one, as `mlflow run`
    sets them."""

    def __init__(self, out: Path, config: Config, run_id: str | None):
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        artifacts = None
        if not uri:
            store = out / "mlflow"
            store.mkdir(exist_ok=True)
            uri, artifacts = sqlite_uri(store.resolve() / "mlflow.db"), store / "artifacts"
        with store_lock(uri):  # MLflow creates the store's tables, the experiment, the run
            self.client = client(uri, own=artifacts is not None)
            if artifacts is not None:
                self._check_in_place(artifacts, out)
            given = os.environ.get("MLFLOW_RUN_ID")  # as `mlflow run` sets it
            run = self._given_run(given, uri) if given else self._saved_run(run_id)
            self.resumed = run is not None and (given or run_id) == run_id
            if run is not None:
                self.id = given or run_id
                self.client.update_run(self.id, status="RUNNING")
                if not given:
                    self._warn_of_another_experiment(run.info.experiment_id)
            else:
                experiment = self._experiment(artifacts)
                self.id = self.client.create_run(experiment, run_name=out.name).info.run_id
        existing = run.data.params if run is not None else {}
        try:
            self._log_config(out, config, existing)
        except BaseException:  # Ctrl-C, or the client's error: the run is not left running
            with contextlib.suppress(Exception):
                self.close(False)
            raise

    def _found(self, run_id: str) -> Any:
        """The store's run ``run_id``; None where the store has none of that id."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id)
        except MlflowException:
            return None

    def _saved_run(self, run_id: str | None) -> Any:
        """The run of trackers.json to go on in; None where there is none, it is not in this
        store (another MLFLOW_TRACKING_URI), or it was deleted in MLflow (a deleted run cannot
        go on: a new one gets the whole history)."""
        run = self._found(run_id) if run_id else None
        return None if run is None or run.info.lifecycle_stage == "deleted" else run

    def _given_run(self, given: str, uri: str | None) -> Any:
        """The run ``MLFLOW_RUN_ID`` names, which this run logs into (the whole history where it
        is not the run of trackers.json); ConfigError where the store has no such run, or it
        was deleted."""
        run = self._found(given)
        if run is None or run.info.lifecycle_stage == "deleted":
            kind = "no run" if run is None else "a deleted run"
            restore = "" if run is None else f"restore it (mlflow runs restore --run-id {given}), "
            raise ConfigError(
                f"run.loggers=mlflow: MLFLOW_RUN_ID={given} is {kind} of the MLflow store "
                f"{uri}; {restore}unset MLFLOW_RUN_ID to start a new run, or set the id of a run "
                f"there"
            )
        return run

    def _log_config(self, out: Path, config: Config, existing: Mapping[str, str]) -> None:
        """The config as parameters, but those of ``existing`` (a resumed run's), and as a file."""
        from mlflow.entities import Param

        # MLflow keeps a parameter's first value: a resume adds the keys the run lacks, and its
        # config.yaml holds the values of the latest session (a longer run, another data.root)
        params = [
            Param(key, str(value))
            for key, value in flatten(config_to_dict(config)).items()
            if key not in existing
        ]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 per batch
            self.client.log_batch(self.id, params=params[start : start + 100])
        self.client.log_artifact(self.id, str(out / "config.yaml"))

    def _check_in_place(self, artifacts: Path, out: Path) -> None:
        """ConfigError if the store in ``out`` keeps its artifacts elsewhere: the folder moved
        after MLflow made its experiment, whose absolute artifact folder MLflow would write to."""
        experiment = self.client.get_experiment_by_name(_experiment_name())
        if experiment is None:
            return
        kept = Path(unquote(urlparse(experiment.artifact_location).path))
        if kept != artifacts.resolve():
            raise ConfigError(
                f"run.loggers=mlflow: cannot go on with the MLflow run of {out}: its store keeps "
                f"the artifacts in {kept}, where the folder was; move it back there, or resume "
                f"without mlflow ({setting_said('run.loggers', 'tensorboard')})"
            )

    def _warn_of_another_experiment(self, experiment_id: str) -> None:
        """Warn when MLFLOW_EXPERIMENT_ID or MLFLOW_EXPERIMENT_NAME names another experiment than
        the one the resumed run is in: MLflow keeps a run in its experiment, so it continues
        there."""
        kept, wanted = self.client.get_experiment(experiment_id).name, _experiment_id()
        asked, setting = _asked()
        if (experiment_id != wanted) if wanted else (kept != _experiment_name()):
            warn(
                f"run.loggers=mlflow: this resume continues the MLflow run in experiment {kept!r}, "
                f"not in {asked} ({setting}), as MLflow keeps a run in its experiment; to log "
                f"into {asked}, train a new run (another {setting_said('run.out')})"
            )

    def _experiment(self, artifacts: Path | None) -> str:
        """The id of the experiment to start the run in, made where it is named but missing."""
        experiment = self._asked_experiment()
        if experiment is not None and experiment.lifecycle_stage == "deleted":
            setting = _asked()[1]
            raise ConfigError(
                f"run.loggers=mlflow: the MLflow experiment {experiment.name!r} was deleted, and "
                f"MLflow starts no run in it; restore it (mlflow experiments restore "
                f"--experiment-id {experiment.experiment_id}), or set {setting} to another "
                f"{'id' if _experiment_id() else 'name'}"
            )
        if experiment is not None:
            return experiment.experiment_id
        location = artifacts.resolve().as_uri() if artifacts is not None else None
        return self.client.create_experiment(_experiment_name(), artifact_location=location)

    def _asked_experiment(self) -> Any:
        """The experiment MLFLOW_EXPERIMENT_ID names (as `mlflow run` sets it), else the one of
        MLFLOW_EXPERIMENT_NAME's name, None where the store has none of that name yet;
        ConfigError where the id names none, or another than MLFLOW_EXPERIMENT_NAME does (as
        MLflow refuses them)."""
        from mlflow.exceptions import MlflowException

        wanted, named = _experiment_id(), os.environ.get("MLFLOW_EXPERIMENT_NAME")
        if not wanted:
            return self.client.get_experiment_by_name(_experiment_name())
        try:
            experiment = self.client.get_experiment(wanted)
        except MlflowException:
            raise ConfigError(
                f"run.loggers=mlflow: MLFLOW_EXPERIMENT_ID={wanted} names no experiment of the "
                f"MLflow store {os.environ.get('MLFLOW_TRACKING_URI')}; set the id of one there "
                f"(mlflow experiments search lists them), or unset it to log into experiment "
                f"{_experiment_name()!r}"
            ) from None
        if named and named != experiment.name:
            raise ConfigError(
                f"run.loggers=mlflow: MLFLOW_EXPERIMENT_ID={wanted} is experiment "
                f"{experiment.name!r}, not {named!r} (MLFLOW_EXPERIMENT_NAME); unset one of them"
            )
        return experiment

    def _log(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in values.items()]
        for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 per batch
            self.client.log_batch(self.id, metrics=metrics[start : start + 1000])

    def epoch(self, record: Mapping[str, Any]) -> None:
        with _errors_unlogged():
            self._log(scalars(record), record["epoch"])

    def finish(self, final: Final) -> None:
        with _errors_unlogged():
            self._log(final.summary, final.epoch)
            self.client.log_text(self.id, final.report + "\n", "report.txt")
            for path in final.files:
                self.client.log_artifact(self.id, str(path))

    def close(self, finished: bool) -> None:
        with _errors_unlogged():
            self.client.set_terminated(self.id, "FINISHED" if finished else "FAILED")


@contextlib.contextmanager
def _errors_unlogged() -> Iterator[None]:
    """MLflow quiet while it logs: it writes an error it raises to its log first (a SQLAlchemy
    traceback of 30 lines where the store was deleted), and Trackers says it in one line."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _switched_off(name: str) -> bool:
    """Whether tracker ``name`` is told to log nothing (``WANDB_MODE=disabled``): it is not
    opened, so trackers.json counts no epoch it never kept, and a later session with it on logs
    every epoch it lacks."""
    return name == "wandb" and os.environ.get("WANDB_MODE") == "disabled"


def _experiment_name() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or PROJECT


def _experiment_id() -> str | None:
    return os.environ.get("MLFLOW_EXPERIMENT_ID") or None


def _asked() -> tuple[str, str]:
    """The experiment asked for, in words, and the setting that asks for it."""
    wanted = _experiment_id()
    if wanted:
        return f"experiment {wanted}", "MLFLOW_EXPERIMENT_ID"
    return repr(_experiment_name()), "MLFLOW_EXPERIMENT_NAME"


OPENERS = {"wandb": WandbRun, "mlflow": MLflowRun}
SETTINGS = {  # what may be amiss
    "wandb": "WANDB_MODE, WANDB_DIR, WANDB_PROJECT",
    "mlflow": "MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME, MLFLOW_EXPERIMENT_ID, MLFLOW_RUN_ID",
}


class Trackers:
    """The trackers ``config.run.loggers`` names, and DIR/trackers.json: each one's run id and the
    last epoch it holds. ``history`` (a resumed run's epochs so far) is logged where missing."""

    def __init__(self, out: Path, config: Config, history: Sequence[Mapping[str, Any]]):
        self.path = out / STATE_FILE
        # a run without history starts afresh; a resume continues the runs the file names
        self.state: dict[str, dict] = self._read() if history else {}
        self.open: dict[str, Tracker] = {}
        self.finished = False
        try:
            self._start(out, config, history)
        except BaseException:  # Ctrl-C or a refusal: no run is left running
            with contextlib.suppress(Exception):  # the error to report is this one
                self.close()
            raise

    def _start(self, out: Path, config: Config, history: Sequence[Mapping[str, Any]]) -> None:
        """Open the trackers, write trackers.json and log the epochs each one lacks."""
        for name in config.run.loggers:
            if name in OPENERS and not _switched_off(name):
                saved = self.state.get(name, {})
                tracker = self._open(name, out, config, saved.get("id"))
                logged = saved.get("epoch", 0) if tracker.resumed else 0
                self.open[name] = tracker
                self.state[name] = {"id": tracker.id, "epoch": logged}
        if self.open:
            self._write()
            for record in history:
                self.epoch(record)

    def _open(self, name: str, out: Path, config: Config, run_id: str | None) -> Tracker:
        """Tracker ``name``'s run; ConfigError in one line if its client refuses (a setting of
        its environment)."""
        try:
            return OPENERS[name](out, config, run_id)
        except Exception as error:  # each client has its own errors (MlflowException, pydantic)
            if isinstance(error, (OSError, SEFError)):  # a full disk (fit says what), or said
                raise
            problem = gist(error)
            raise ConfigError(
                f"run.loggers={name}: {name} could not open its run: {problem}; check "
                f"{SETTINGS[name]}, or log without {name}"
            ) from error

    def _read(self) -> dict[str, dict]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def _write(self) -> None:
        outputs.write_text(self.path, json.dumps(self.state, indent=2) + "\n")

    def epoch(self, record: Mapping[str, Any]) -> None:
        """Log ``record`` to every tracker that does not hold its epoch yet."""
        logged = False
        for name in list(self.open):
            if record["epoch"] > self.state[name]["epoch"] and self._tell(name, "epoch", record):
                self.state[name]["epoch"] = record["epoch"]
                logged = True
        if logged:
            self._write()

    def finish(self, final: Final) -> None:
        """The final report as each run's summary, and its files where the tracker takes them."""
        for name in list(self.open):
            self._tell(name, "finish", final)
        self.finished = True

    def close(self) -> None:
        """End every run: finished if ``finish`` was called, else failed (a resume continues)."""
        for name in list(self.open):
            self._tell(name, "close", self.finished)

    def _tell(self, name: str, action: str, argument: Any) -> bool:
        """Whether tracker ``name`` did ``action`` (epoch, finish, close); if it failed (its store
        deleted, its server gone, its disk full), one warning, and the run goes on without it:
        training, checkpoints and metrics.jsonl do not depend on a tracker."""
        tracker = self.open[name]
        try:
            getattr(tracker, action)(argument)
            return True
        except Exception as error:  # each client has its own errors
            problem = gist(error)
            warn(
                f"run.loggers={name}: {name} failed and logs no more of this run: {problem}; "
                f"training goes on without it (metrics.jsonl keeps every epoch)"
            )
            del self.open[name]
            if action != "close":
                with contextlib.suppress(Exception):  # the run, as far as it can be ended
                    tracker.close(False)
            return False
