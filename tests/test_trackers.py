"""`sef train --log wandb mlflow`: the real clients write the runs, and read them back (MLflow
through MlflowClient, W&B from the offline run's files as its client wrote them)."""

from __future__ import annotations

import csv
import json
import socket
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from sef import mlflow_store, network, text, trackers
from sef.cli import main
from sef.config import config_to_dict, flatten, load_config_file, load_preset, save_config
from sef.errors import ConfigError, said_to_command
from sef.mlflow_store import sqlite_uri
from sef.trackers import STATE_FILE, MLflowRun, Trackers, scalars

pytest.importorskip("wandb")
pytest.importorskip("mlflow")

TINY = [
    "--set", "data.options.per_class=3", "--set", "data.options.test_per_class=2",
    "--image-size", "32", "--batch-size", "8", "--workers", "0", "--no-progress",
]  # fmt: skip


@pytest.fixture
def trackers_offline(tmp_path: Path, demo_root: Path, monkeypatch) -> Path:
    """No tracker setting of the machine leaks in, and W&B's own folders live under tmp_path."""
    for name in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name))
    monkeypatch.setenv("WANDB_QUIET", "true")
    return tmp_path / "run"


def _run_folder(out: Path, *loggers: str):
    """A run folder ``out`` holding the demo preset's config.yaml (with ``loggers``): the
    config."""
    out.mkdir()
    config = load_preset("demo")
    if loggers:
        config.run.loggers = list(loggers)
    save_config(config, out / "config.yaml")
    return config


def _train(out: Path, *args: str) -> int:
    """`sef train` of the tiny demo into ``out``, in this process."""
    return main(["train", *TINY, "--out", str(out), *args])


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------------- W&B files


def _wandb_records(path: Path) -> list:
    """The protobuf records of a .wandb file: W&B's header, then LevelDB's log format (32 KiB
    blocks of records with a 7-byte header: checksum, length, type; FIRST/MIDDLE/LAST pieces)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, offset, pending, records = 32768, 7, b"", []
    while offset + 7 <= len(data):
        if block - offset % block < 7:  # a block's tail too short for a header is padding
            offset += block - offset % block
            continue
        length, kind = int.from_bytes(data[offset + 4 : offset + 6], "little"), data[offset + 6]
        if kind == 0:  # zeros past the last record
            break
        pending += data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):  # FULL or LAST
            records.append(Record.FromString(pending))
            pending = b""
    return records


def _values(items) -> dict:
    """A W&B record's items (config, history, summary) as plain values by name."""
    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}


def _wandb_session(folder: Path) -> dict:
    """What one offline W&B session holds: run id, history rows, config, summary, artifacts."""
    (file,) = folder.glob("run-*.wandb")
    session: dict = {"history": [], "config": {}, "summary": {}, "artifacts": [], "exit": None}
    for record in _wandb_records(file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            session["id"], session["project"] = record.run.run_id, record.run.project
            session["config"] |= _values(record.run.config.update)
        elif kind == "config":
            session["config"] |= _values(record.config.update)
        elif kind == "history":
            session["history"].append(_values(record.history.item))
        elif kind == "summary":
            session["summary"] |= _values(record.summary.update)
        elif kind == "artifact":
            paths = [entry.path for entry in record.artifact.manifest.contents]
            session["artifacts"].append((record.artifact.type, sorted(paths)))
        elif kind == "exit":
            session["exit"] = record.exit.exit_code
    return session


def _epoch_rows(session: dict) -> list[dict]:
    """History rows of epochs, without W&B's own keys (_step, _runtime, _timestamp)."""
    return [
        {k: v for k, v in row.items() if not k.startswith("_")}
        for row in session["history"]
        if "epoch" in row
    ]


def _expected_row(record: dict) -> dict:
    return {"epoch": record["epoch"], **scalars(record)}


# ------------------------------------------------------------------------------------ MLflow


def _mlflow_run(out: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out.resolve() / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sef")
    (run,) = client.search_runs([experiment.experiment_id])  # one run, resumed or not
    return client, run


def _check_mlflow_has_every_epoch(out: Path, records: list[dict]) -> None:
    client, run = _mlflow_run(out)
    expected = {key for record in records for key in scalars(record)}
    assert expected <= set(run.data.metrics)
    for key in expected:
        history = client.get_metric_history(run.info.run_id, key)
        steps = {m.step: m.value for m in history}
        assert len(history) == len(steps), f"{key} logged twice at one step"
        assert steps == {r["epoch"]: scalars(r)[key] for r in records if key in scalars(r)}


def test_scalars_name_every_number_and_each_group_and_skip_the_rest() -> None:
    record = {"epoch": 3, "lr": 0.1, "eval_group_top1": [0.5, 0.25], "train_corr_within": 0.7,
              "note": "text", "nested": [[1, 2]]}  # fmt: skip
    assert scalars(record) == {
        "lr": 0.1,
        "eval_group_top1/group1": 0.5,
        "eval_group_top1/group2": 0.25,
        "train_corr_within": 0.7,
    }


@pytest.mark.slow
def test_wandb_and_mlflow_get_every_epoch_and_a_resume_appends_to_the_same_runs(
    trackers_offline: Path, capsys
) -> None:
    out = trackers_offline
    assert _train(out, "--epochs", "2", "--log", "wandb", "mlflow") == 0
    first = json.loads((out / STATE_FILE).read_text())
    assert [first[name]["epoch"] for name in ("wandb", "mlflow")] == [2, 2]
    assert not (out / "tb").exists()  # --log names tensorboard or leaves it out
    assert main(["train", "--resume", "--out", str(out), "--epochs", "3", "--no-progress"]) == 0
    assert "run folder" in capsys.readouterr().out
    state = json.loads((out / STATE_FILE).read_text())
    assert {name: state[name]["id"] for name in state} == {n: first[n]["id"] for n in first}
    records = _records(out)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    config = config_to_dict(load_config_file(out / "config.yaml"))

    # MLflow: one run with every parameter, every metric at every epoch, summary and files
    _check_mlflow_has_every_epoch(out, records)
    client, run = _mlflow_run(out)
    assert run.info.run_id == state["mlflow"]["id"] and run.info.status == "FINISHED"
    assert run.info.run_name == out.name
    params = {key: str(value) for key, value in flatten(config).items()}
    params["optim.epochs"] = "2"  # MLflow keeps a parameter's first value
    assert run.data.params == params
    assert run.data.metrics["best_eval_top1"] == max(r["eval_top1"] for r in records)
    assert run.data.metrics["last_eval_top1"] == records[-1]["eval_top1"]
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert files == {"best.pt", "best-test-predictions.csv", "config.yaml", "report.txt"}
    report = Path(client.download_artifacts(run.info.run_id, "report.txt", str(out.parent)))
    assert "best eval top-1" in report.read_text() and "(epoch 3)" in report.read_text()
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(out / "mlflow")  # the store lives in the run folder

    # W&B: two offline sessions of one run id; the second holds epoch 3 only
    folders = sorted((out / "wandb").glob("offline-run-*"))
    assert len(folders) == 2
    sessions = [_wandb_session(folder) for folder in folders]
    assert {s["id"] for s in sessions} == {state["wandb"]["id"]}
    assert all(s["project"] == "sef" and s["exit"] == 0 for s in sessions)
    rows = [row for s in sessions for row in _epoch_rows(s)]
    assert rows == [_expected_row(r) for r in records]
    assert [row["_step"] for s in sessions for row in s["history"] if "epoch" in row] == [1, 2, 3]
    assert sessions[0]["config"]["optim"]["epochs"] == 2
    assert sessions[1]["config"]["optim"]["epochs"] == 3  # the resumed session's config
    assert sessions[1]["config"]["model"] == config["model"]
    summary = sessions[1]["summary"]
    assert summary["last_eval_top1"] == records[-1]["eval_top1"]
    assert "best eval top-1" in summary["report"]
    expected_files = ("model", ["best-test-predictions.csv", "best.pt"])
    assert all(s["artifacts"] == [expected_files] for s in sessions)

    # the per-image CSV is the best epoch's, one row per test image
    with open(out / "best-test-predictions.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 16


@pytest.mark.slow
def test_a_tracker_added_on_resume_gets_the_epochs_before_it(
    trackers_offline: Path, capsys
) -> None:
    out = trackers_offline
    assert _train(out, "--epochs", "1") == 0
    assert (out / "tb").is_dir() and not (out / STATE_FILE).exists()
    resume = ["train", "--resume", "--out", str(out), "--epochs", "2", "--log", "mlflow"]
    assert main([*resume, "--no-progress"]) == 0
    capsys.readouterr()
    _check_mlflow_has_every_epoch(out, _records(out))


@pytest.mark.slow
def test_the_users_mlflow_store_and_wandb_mode_are_respected(
    trackers_offline: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path / 'own.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "birds")
    monkeypatch.chdir(tmp_path)  # MLflow puts a store's default artifact folder in the cwd
    monkeypatch.setenv("WANDB_MODE", "disabled")
    out = trackers_offline
    assert _train(out, "--epochs", "1", "--log", "mlflow", "wandb") == 0
    capsys.readouterr()
    assert not (out / "mlflow").exists() and not (out / "wandb").exists()
    client = MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name("birds").experiment_id])
    assert run.info.run_id == json.loads((out / STATE_FILE).read_text())["mlflow"]["id"]
    assert run.data.metrics["eval_top1"] == _records(out)[0]["eval_top1"]


@pytest.mark.slow
def test_a_tracker_its_client_refuses_stops_in_one_line_and_fails_the_runs_opened(
    trackers_offline: Path, monkeypatch
) -> None:
    # W&B refused WANDB_MODE=bogus with a multi-line pydantic error after MLflow's run had opened,
    # which stayed RUNNING; a bad MLFLOW_TRACKING_URI ended in MLflow's own traceback
    from mlflow.tracking import MlflowClient

    out = trackers_offline
    config = _run_folder(out, "mlflow", "wandb")
    monkeypatch.setenv("WANDB_MODE", "bogus")
    with pytest.raises(ConfigError) as info:
        Trackers(out, config, [])
    message = str(info.value)
    assert message.startswith("run.loggers=wandb: wandb could not open its run: ")
    assert "'bogus'" in message and "check WANDB_MODE" in message and "\n" not in message
    client = MlflowClient(f"sqlite:///{out / 'mlflow' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sef").experiment_id])
    assert [run.info.status for run in runs] == ["FAILED"]

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus://x")
    with pytest.raises(ConfigError, match=r"^run.loggers=mlflow: .*'bogus://x'.*MLFLOW_TRACK"):
        Trackers(out, config, [])


@pytest.mark.slow
def test_the_mlflow_store_stays_in_a_run_folder_named_with_url_characters(
    trackers_offline: Path, tmp_path: Path
) -> None:
    # SQLAlchemy read the unquoted URI: 'lr 10%25' put the store in 'lr 10%', and 'why?x' made
    # it the file 'why' beside the run folder
    for name in ("lr 10%25", "why?x=1"):
        out = tmp_path / name
        config = _run_folder(out, "mlflow")
        trackers = Trackers(out, config, [])
        trackers.close()
        assert (out / "mlflow" / "mlflow.db").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr 10%25", "why?x=1"]


def _closed_port() -> int:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        return free.getsockname()[1]  # closed again when the test connects


def test_wandb_online_with_a_server_that_takes_no_connection_stops_before_the_run_folder(
    trackers_offline: Path, monkeypatch, capsys
) -> None:
    # WANDB_MODE=online on a machine without network: wandb.init waited its init_timeout (90 s,
    # shortened here so that a check left to W&B fails fast) after the data had loaded
    import wandb

    port = _closed_port()
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "2")
    wandb.teardown()  # W&B reads its settings once a process: these, and the next test's own
    try:
        assert _train(trackers_offline, "--log", "wandb") == 2
    finally:
        wandb.teardown()
    assert capsys.readouterr().err == (
        f"sef train: error: run.loggers=wandb: WANDB_MODE=online but the W&B server at "
        f"127.0.0.1:{port} takes no connection ([Errno 111] Connection refused); train with "
        f"WANDB_MODE=offline and upload the run later with wandb sync DIR/wandb/offline-run-*, "
        f"or log without wandb\n"
    )
    assert not trackers_offline.exists()  # before the data and the run folder


def test_a_wandb_dir_that_cannot_be_written_is_refused_before_the_run(
    trackers_offline: Path, tmp_path: Path, monkeypatch
) -> None:
    # W&B put the run in the system's temporary folder (/tmp/wandb/offline-run-*), said in a
    # warning among its start lines, and the offline run waiting for wandb sync was lost there;
    # require runs before any image is read (as for the W&B server, tested above)
    taken = tmp_path / "notes.txt"
    taken.write_text("a file where the folder should be\n")
    for folder in (taken, taken / "wandb"):
        monkeypatch.setenv("WANDB_DIR", str(folder))
        with pytest.raises(ConfigError) as info:
            trackers.require(["tensorboard", "wandb"])
        assert str(info.value) == (
            f"run.loggers=wandb: WANDB_DIR: cannot write {folder}: {taken} is a file, not a "
            f"folder; point WANDB_DIR at a folder you can write, or unset it to keep the W&B run "
            f"in DIR/wandb"
        )
    missing = tmp_path / "new" / "wandb"  # W&B makes a missing folder: taken, and left to it
    monkeypatch.setenv("WANDB_DIR", str(missing))
    trackers.require(["wandb"])
    assert not (tmp_path / "new").exists()
    monkeypatch.setenv("WANDB_DIR", str(taken))
    monkeypatch.setenv("WANDB_MODE", "disabled")  # W&B writes nothing: no folder to check
    trackers.require(["wandb"])


def test_a_wandb_dir_under_a_literal_tilde_is_the_home_folder_and_no_folder_named_tilde(
    tmp_path: Path, monkeypatch
) -> None:
    # WANDB_DIR=~/wandb-runs as a .env file or a quoted assignment leaves it: W&B expanded it,
    # but first made an empty folder named ~ in the current one; sef hands it the expanded path
    import sys

    from sef.config import Config

    home, here = tmp_path / "home", tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_DIR", "~/wandb-runs")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    trackers.require(["wandb"])  # checked where it will be: nothing made, nothing in here
    opened = {}
    fake = SimpleNamespace(
        init=lambda **settings: opened.update(settings) or SimpleNamespace(id="r")
    )
    monkeypatch.setitem(sys.modules, "wandb", fake)
    trackers.WandbRun(tmp_path / "run", Config(), None)
    assert opened["dir"] == str(home / "wandb-runs")
    assert list(here.iterdir()) == [] and not home.exists()


def test_a_server_whose_name_lookup_hangs_is_given_up_on_at_the_limit(monkeypatch) -> None:
    # a node whose name server does not answer: the socket timeout does not cover the lookup,
    # which waits for the resolver's own timeouts (5 s a try and a server by default)
    def lookup_that_hangs(address, timeout):
        time.sleep(3)
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(network, "SERVER_TIMEOUT", 0.1)
    monkeypatch.setattr(socket, "create_connection", lookup_that_hangs)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"mlflow.example:5000 .*\(no answer within 0.1 s\)"):
        trackers.require(["mlflow"])
    assert time.monotonic() - started < 1


def test_runs_opening_one_mlflow_sqlite_store_take_turns(tmp_path: Path, monkeypatch) -> None:
    # four runs started at once into a new MLFLOW_TRACKING_URI=sqlite:///... store all failed
    # ("table _alembic_tmp_experiments already exists"), and so did every later run: MLflow
    # created the tables in each process at once. The fake client below records whether the
    # lock is held where MLflow creates the tables, the experiment and the run.
    import mlflow.tracking

    fcntl = pytest.importorskip("fcntl")
    db = tmp_path / "shared store" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(db))

    def locked() -> bool:
        try:
            with open(f"{db}.sef-lock") as probe:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (FileNotFoundError, BlockingIOError) as error:
            return isinstance(error, BlockingIOError)
        return False

    held = []

    class Client:
        def __init__(self, tracking_uri: str) -> None:
            held.append(("tables", locked()))

        def search_experiments(self, max_results: int) -> None:
            pass

        def get_experiment_by_name(self, name: str) -> None:
            return None

        def create_experiment(self, name: str, artifact_location: str | None) -> str:
            held.append(("experiment", locked()))
            return "1"

        def create_run(self, experiment: str, run_name: str) -> SimpleNamespace:
            held.append(("run", locked()))
            return SimpleNamespace(info=SimpleNamespace(run_id="r1"))

        def log_batch(self, *args, **options) -> None:
            pass

        log_artifact = log_batch

    monkeypatch.setattr(mlflow.tracking, "MlflowClient", Client)
    out = tmp_path / "run"
    out.mkdir()
    MLflowRun(out, load_preset("demo"), None)
    # the store made aside, then opened, both under the lock
    assert held == [("tables", True), ("tables", True), ("experiment", True), ("run", True)]
    assert not locked()  # given back once the run is open


def test_a_link_in_place_of_the_mlflow_store_lock_is_refused_never_opened(tmp_path: Path) -> None:
    # mlflow.db.sef-lock was opened to append through a link: it made the file it pointed to
    pytest.importorskip("fcntl")
    db, target = tmp_path / "store" / "mlflow.db", tmp_path / "elsewhere"
    db.parent.mkdir()
    lock = db.parent / "mlflow.db.sef-lock"
    lock.symlink_to(target)
    with pytest.raises(ConfigError) as info, mlflow_store.store_lock(sqlite_uri(db)):
        pass
    assert str(info.value) == (
        f"run.loggers=mlflow: {lock} is a link to {target}, not the lock of the MLflow store "
        f"beside it; remove it (no run holds it)"
    )
    assert not target.exists()


@pytest.mark.parametrize("experiment", ["sef", "birds"])
def test_a_resume_under_another_mlflow_experiment_name_says_where_the_run_goes_on(
    tmp_path: Path, monkeypatch, experiment: str
) -> None:
    # MLFLOW_EXPERIMENT_NAME changed between two sessions: the resume went on in the run's own
    # experiment, 'sef', and said nothing. The fake client holds that run.
    import mlflow.tracking

    class Client:
        def __init__(self, tracking_uri: str) -> None:
            pass

        def get_run(self, run_id: str) -> SimpleNamespace:
            info = SimpleNamespace(lifecycle_stage="active", experiment_id="1")
            return SimpleNamespace(info=info, data=SimpleNamespace(params={}))

        def get_experiment(self, experiment_id: str) -> SimpleNamespace:
            return SimpleNamespace(name={"1": "sef"}[experiment_id])

        def update_run(self, *args, **options) -> None:
            pass

        log_batch = log_artifact = search_experiments = update_run

    monkeypatch.setattr(mlflow.tracking, "MlflowClient", Client)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(tmp_path / "store" / "mlflow.db"))
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)

    def warned() -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert MLflowRun(tmp_path, load_preset("demo"), "r1").resumed
        return [str(warning.message) for warning in caught]

    assert warned() == (
        []
        if experiment == "sef"
        else [
            "run.loggers=mlflow: this resume continues the MLflow run in experiment 'sef', not "
            "in 'birds' (MLFLOW_EXPERIMENT_NAME), as MLflow keeps a run in its experiment; to "
            "log into 'birds', train a new run (another run.out)"
        ]
    )
    if experiment != "sef":
        with said_to_command():  # `sef train --resume`'s user gives --out
            assert warned()[0].endswith(", train a new run (another --out)")


class _Store:
    """A fake MlflowClient of a store holding experiment 7, 'birds', and its run r9 (with the
    parameter `mlflow run` gave it); what the run logs into is recorded."""

    created: list = []
    params: list = []

    def __init__(self, tracking_uri: str) -> None:
        self.experiments = {"7": SimpleNamespace(name="birds", experiment_id="7")}
        for experiment in self.experiments.values():
            experiment.lifecycle_stage = "active"

    def get_experiment(self, experiment_id: str) -> SimpleNamespace:
        from mlflow.exceptions import MlflowException

        if experiment_id not in self.experiments:
            raise MlflowException(f"No Experiment with id={experiment_id} exists")
        return self.experiments[experiment_id]

    def get_run(self, run_id: str) -> SimpleNamespace:
        from mlflow.exceptions import MlflowException

        if run_id != "r9":
            raise MlflowException(f"Run '{run_id}' not found")
        info = SimpleNamespace(run_id="r9", lifecycle_stage="active", experiment_id="7")
        return SimpleNamespace(info=info, data=SimpleNamespace(params={"optim.lr": "0.1"}))

    def create_run(self, experiment: str, run_name: str) -> SimpleNamespace:
        self.created.append(experiment)
        return SimpleNamespace(info=SimpleNamespace(run_id="new"))

    def log_batch(self, run_id: str, params=(), **options) -> None:
        self.params += [(run_id, param.key) for param in params]

    def update_run(self, *args, **options) -> None:
        pass

    search_experiments = log_artifact = update_run


@pytest.fixture
def store(tmp_path: Path, monkeypatch) -> type[_Store]:
    import mlflow.tracking

    monkeypatch.setattr(mlflow.tracking, "MlflowClient", _Store)
    monkeypatch.setattr(_Store, "created", [])
    monkeypatch.setattr(_Store, "params", [])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example")
    for name in ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    return _Store


def test_a_moved_mlflow_store_says_how_its_reader_resumes_without_mlflow(tmp_path: Path) -> None:
    """fit(config, resume=True) was told to resume with --log tensorboard."""
    kept = SimpleNamespace(artifact_location=(tmp_path / "before" / "artifacts").as_uri())
    run = SimpleNamespace(client=SimpleNamespace(get_experiment_by_name=lambda name: kept))

    def refusal() -> str:
        with pytest.raises(ConfigError) as info:
            MLflowRun._check_in_place(run, tmp_path / "now" / "artifacts", tmp_path / "now")
        return str(info.value)

    assert refusal().endswith(
        "; move it back there, or resume without mlflow (run.loggers=tensorboard)"
    )
    with said_to_command():
        assert refusal().endswith(", or resume without mlflow (--log tensorboard)")


def test_mlflow_experiment_id_is_honoured_and_checked(tmp_path: Path, store, monkeypatch) -> None:
    # `mlflow run` sets MLFLOW_EXPERIMENT_ID: the run went to experiment 'sef' all the same
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "7")
    assert MLflowRun(tmp_path, load_preset("demo"), None).id == "new"
    assert store.created == ["7"]
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "8")
    with pytest.raises(ConfigError) as info:
        MLflowRun(tmp_path, load_preset("demo"), None)
    assert str(info.value) == (
        "run.loggers=mlflow: MLFLOW_EXPERIMENT_ID=8 names no experiment of the MLflow store "
        "http://mlflow.example; set the id of one there (mlflow experiments search lists them), "
        "or unset it to log into experiment 'sef'"
    )
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "7")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "cars")
    with pytest.raises(ConfigError, match=r"=7 is experiment 'birds', not 'cars' \(MLFLOW_EXP"):
        MLflowRun(tmp_path, load_preset("demo"), None)
    assert store.created == ["7"]
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "8")
    with pytest.warns(UserWarning, match="experiment 'birds', not in experiment 8 \\(MLFLOW_EXP"):
        assert MLflowRun(tmp_path, load_preset("demo"), "r9").resumed  # a resume stays in 7


def test_mlflow_run_id_names_the_run_to_log_into(tmp_path: Path, store, monkeypatch) -> None:
    # `mlflow run` sets MLFLOW_RUN_ID to the run it made: sef started another beside it
    monkeypatch.setenv("MLFLOW_RUN_ID", "r9")
    for saved in (None, "r1", "r9"):  # a new run, a resume of another run, of that run
        run = MLflowRun(tmp_path, load_preset("demo"), saved)
        assert (run.id, run.resumed) == ("r9", saved == "r9")
    assert store.created == [] and ("r9", "optim.lr") not in store.params
    monkeypatch.setenv("MLFLOW_RUN_ID", "r8")
    with pytest.raises(ConfigError) as info:
        MLflowRun(tmp_path, load_preset("demo"), None)
    assert str(info.value) == (
        "run.loggers=mlflow: MLFLOW_RUN_ID=r8 is no run of the MLflow store "
        "http://mlflow.example; unset MLFLOW_RUN_ID to start a new run, or set the id of a run "
        "there"
    )


@pytest.mark.parametrize("setting", ["MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"])
def test_an_mlflow_id_without_its_store_is_refused(monkeypatch, setting: str) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv(setting, "7")
    with pytest.raises(ConfigError) as info:
        trackers.require(["mlflow"])
    assert str(info.value).startswith(f"run.loggers=mlflow: {setting} names ")
    assert str(info.value).endswith(
        "without MLFLOW_TRACKING_URI the run logs into its own store, DIR/mlflow/mlflow.db; set "
        f"MLFLOW_TRACKING_URI to the store that holds it, or unset {setting}"
    )


def test_a_tracker_that_fails_mid_run_or_at_the_end_warns_once_and_training_goes_on(
    tmp_path: Path, monkeypatch
) -> None:
    # an MLflow store deleted mid-run raised out of the epoch's logging (after last.pt was
    # written) and ended `sef train` in a traceback; a failure in the final report's upload made
    # a finished run exit 1
    calls: list[tuple] = []

    class Fake:
        fails_at: tuple = ()

        def __init__(self, out: Path, config, run_id: str | None) -> None:
            self.id, self.resumed = type(self).__name__, False

        def _do(self, what: str, value) -> None:
            if (what, value) in self.fails_at:
                raise RuntimeError(f"store\n  {self.id} is gone")
            calls.append((self.id, what, value))

        def epoch(self, record) -> None:
            self._do("epoch", record["epoch"])

        def finish(self, final) -> None:
            self._do("finish", final.epoch)

        def close(self, finished: bool) -> None:
            self._do("close", finished)

    class Early(Fake):
        fails_at = (("epoch", 2),)

    class Late(Fake):
        fails_at = (("finish", 3),)

    monkeypatch.setitem(trackers.OPENERS, "wandb", Early)
    monkeypatch.setitem(trackers.OPENERS, "mlflow", Late)
    config = load_preset("demo")
    config.run.loggers = ["wandb", "mlflow"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logged = Trackers(tmp_path, config, [])
        for epoch in (1, 2, 3):
            logged.epoch({"epoch": epoch, "eval_top1": 0.5})
        logged.finish(trackers.Final({}, "report", [], 3))
        logged.close()
    said = [str(w.message) for w in caught]
    assert said == [
        f"run.loggers={name}: {name} failed and logs no more of this run: store {fake} is gone; "
        f"training goes on without it (metrics.jsonl keeps every epoch)"
        for name, fake in (("wandb", "Early"), ("mlflow", "Late"))
    ]
    assert calls == [
        ("Early", "epoch", 1), ("Late", "epoch", 1),
        ("Early", "close", False),  # its run ended as failed; no more calls
        ("Late", "epoch", 2), ("Late", "epoch", 3),
        ("Late", "close", False),
    ]  # fmt: skip
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert {name: state[name]["epoch"] for name in state} == {"wandb": 1, "mlflow": 3}


def test_a_session_with_wandb_disabled_leaves_its_epochs_to_the_next_one(
    tmp_path: Path, monkeypatch
) -> None:
    # WANDB_MODE=disabled still recorded its dummy run and epochs 1-2 in trackers.json, so a
    # resume with W&B on opened a run under that id and logged epoch 3 only
    logged: list[int] = []

    class Fake:
        def __init__(self, out: Path, config, run_id: str | None) -> None:
            self.id, self.resumed = run_id or "new", run_id is not None

        def epoch(self, record) -> None:
            logged.append(record["epoch"])

        def close(self, finished: bool) -> None:
            pass

    monkeypatch.setitem(trackers.OPENERS, "wandb", Fake)
    config = load_preset("demo")
    config.run.loggers = ["wandb"]
    history = [{"epoch": 1}, {"epoch": 2}]
    monkeypatch.setenv("WANDB_MODE", "disabled")
    Trackers(tmp_path, config, history[:1]).epoch(history[1])
    assert logged == []
    monkeypatch.delenv("WANDB_MODE")
    Trackers(tmp_path, config, history).close()
    assert logged == [1, 2]


def test_an_mlflow_sqlite_store_under_home_is_refused_with_the_full_path(monkeypatch) -> None:
    # MLflow reads sqlite:///~/mlflow.db as the relative path ~/mlflow.db: the run made a folder
    # named ~ in the current one and logged there
    monkeypatch.setenv("HOME", "/home/ann")
    for uri, full in (
        ("sqlite:///~/ml runs.db", "sqlite:////home/ann/ml%20runs.db"),
        ("~/mlruns", "/home/ann/mlruns"),  # MLflow's file store, quoted in the shell
    ):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        with pytest.raises(ConfigError) as info:
            trackers.require(["mlflow"])
        assert str(info.value) == (
            f"run.loggers=mlflow: MLFLOW_TRACKING_URI={uri} puts the store in a folder named ~ "
            f"in the current one (MLflow does not expand ~); write the full path: {full}"
        )


@pytest.mark.parametrize("uri", ["sqlite://", "sqlite:///:memory:", "sqlite:///?cache=shared"])
def test_an_mlflow_sqlite_store_in_memory_is_refused(monkeypatch, uri: str) -> None:
    # MLflow took it, and everything the run logged was gone when the process ended
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(ConfigError) as info:
        trackers.require(["mlflow"])
    assert str(info.value) == (
        f"run.loggers=mlflow: MLFLOW_TRACKING_URI={uri} is a SQLite store in memory, lost with "
        f"everything the run logs when it ends; name a file (sqlite:////full/path/mlflow.db), or "
        f"unset it to log into DIR/mlflow/mlflow.db"
    )


def test_an_mlflow_server_that_takes_no_connection_stops_before_the_run_folder(
    trackers_offline: Path, monkeypatch, capsys
) -> None:
    # MLflow's client retried a refused connection for 4 minutes (7 tries, backoff 2 s doubling)
    # after the data had loaded, then stopped the run; the retries are off here so that a check
    # left to MLflow fails fast
    port = _closed_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    out = trackers_offline
    assert _train(out, "--log", "mlflow") == 2
    assert capsys.readouterr().err == (
        f"sef train: error: run.loggers=mlflow: the MLflow server at 127.0.0.1:{port} "
        f"(MLFLOW_TRACKING_URI) takes no connection ([Errno 111] Connection refused); start it, "
        f"correct MLFLOW_TRACKING_URI, or log without mlflow\n"
    )
    assert not out.exists()  # before the data and the run folder


@pytest.mark.slow
def test_resuming_a_moved_run_refuses_mlflow_which_would_write_to_the_old_place(
    trackers_offline: Path, tmp_path: Path, capsys
) -> None:
    """MLflow's store records each run's artifact folder as an absolute path."""
    before, moved = trackers_offline, tmp_path / "moved"
    assert _train(before, "--epochs", "1", "--log", "mlflow") == 0
    before.rename(moved)
    capsys.readouterr()
    resume = ["train", "--resume", "--out", str(moved), "--epochs", "2", "--no-progress"]
    assert main([*resume, "--log", "mlflow"]) == 2
    assert capsys.readouterr().err == (
        f"sef train: error: run.loggers=mlflow: cannot go on with the MLflow run of {moved}: "
        f"its store keeps the artifacts in {before.resolve() / 'mlflow' / 'artifacts'}, where "
        f"the folder was; move it back there, or resume without mlflow (--log tensorboard)\n"
    )
    assert not before.exists()  # nothing written to the old place
    assert main([*resume, "--log", "tensorboard"]) == 0


def test_a_tracker_error_is_quoted_in_one_short_line() -> None:
    """MLflow's store deleted mid-run: SQLAlchemy's error quoted its SQL and parameters, lines
    of them, in the warning."""
    sql = (
        "(sqlite3.OperationalError) no such table: metrics\n[SQL: INSERT INTO metrics " + "x " * 300
    )
    gist = text.gist(RuntimeError(sql))
    assert gist.startswith("(sqlite3.OperationalError) no such table: metrics [SQL: INSERT")
    assert len(gist) <= text.GIST and " ... " in gist
    assert text.gist(RuntimeError("store\n  gone")) == "store gone"


def test_a_long_tracker_error_keeps_its_end_where_the_client_says_what_to_do() -> None:
    # MLflow's refusal of its file store lost the setting that allows it, past the cut
    refusal = "The filesystem tracking backend is in maintenance mode. " * 6
    refusal += "set `MLFLOW_ALLOW_FILE_STORE=true` to opt out of this exception."
    gist = text.gist(RuntimeError(refusal))
    assert len(gist) <= text.GIST and " ... " in gist
    assert gist.startswith("The filesystem tracking backend is in maintenance mode.")
    assert gist.endswith("set `MLFLOW_ALLOW_FILE_STORE=true` to opt out of this exception.")


def test_a_refused_run_names_the_project_and_experiment_settings_too(
    trackers_offline: Path, monkeypatch
) -> None:
    # WANDB_PROJECT=team/proj was refused with "check WANDB_MODE, WANDB_DIR", neither at fault
    monkeypatch.setattr(trackers, "OPENERS", {"wandb": _refusing, "mlflow": _refusing})
    config = load_preset("demo")
    for name, setting in (("wandb", "WANDB_PROJECT"), ("mlflow", "MLFLOW_EXPERIMENT_NAME")):
        config.run.loggers = [name]
        with pytest.raises(ConfigError, match=f"could not open its run: no; check .*{setting}"):
            Trackers(trackers_offline, config, [])


def _refusing(*args) -> None:
    raise ValueError("no")


def test_a_deleted_mlflow_run_is_started_anew_and_a_deleted_experiment_refused(
    trackers_offline: Path, monkeypatch
) -> None:
    # a resume whose MLflow run was deleted stopped, blaming MLFLOW_TRACKING_URI; a deleted
    # experiment ("The experiment 1 must be in the 'active' state") too
    out = trackers_offline
    config = _run_folder(out)
    first = MLflowRun(out, config, None)
    first.client.delete_run(first.id)
    again = MLflowRun(out, config, first.id)
    assert not again.resumed and again.id != first.id
    experiment = first.client.get_experiment_by_name("sef").experiment_id
    first.client.delete_experiment(experiment)
    with pytest.raises(ConfigError) as info:
        MLflowRun(out, config, None)
    assert str(info.value) == (
        f"run.loggers=mlflow: the MLflow experiment 'sef' was deleted, and MLflow starts no run "
        f"in it; restore it (mlflow experiments restore --experiment-id {experiment}), or set "
        f"MLFLOW_EXPERIMENT_NAME to another name"
    )


def test_a_run_stopped_while_mlflow_creates_its_store_leaves_none_half_made(
    trackers_offline: Path, monkeypatch
) -> None:
    # Ctrl-C during MLflow's table creation left DIR/mlflow/mlflow.db half made, and the same
    # command then stopped every time: "table secrets already exists"
    import mlflow.store.db.utils as db

    out = trackers_offline
    config = _run_folder(out)
    with monkeypatch.context() as patch:
        patch.setattr(db, "_upgrade_db", _interrupt)
        with pytest.raises(KeyboardInterrupt):
            MLflowRun(out, config, None)
    assert not (out / "mlflow" / "mlflow.db").exists()
    assert not MLflowRun(out, config, None).resumed


def _interrupt(*args) -> None:
    raise KeyboardInterrupt


def _store(path: Path, revision: str | None, runs: int = 0) -> Path:
    """A SQLite file with MLflow's schema revision ``revision`` and ``runs`` runs, the rest of an
    MLflow store left out: what sef reads of a store MLflow could not open."""
    import sqlite3

    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE runs (run_uuid TEXT)")
        db.executemany("INSERT INTO runs VALUES (?)", [(str(n),) for n in range(runs)])
        if revision is not None:
            db.execute("CREATE TABLE alembic_version (version_num TEXT)")
            db.execute("INSERT INTO alembic_version VALUES (?)", (revision,))
    db.close()
    return path


def _head() -> str:
    return mlflow_store._migrations().get_current_head()


HALF_MADE = "table registered_model_tags already exists"


def _fault(path: Path, error: str = HALF_MADE) -> str | None:
    return mlflow_store._store_fault(path, sqlite_uri(path), RuntimeError(error))


def test_a_broken_mlflow_store_is_said_in_one_line_with_what_to_do(tmp_path: Path) -> None:
    # a store half made by a stopped run, or of another MLflow's schema, stopped the run with
    # SQLAlchemy's error and its SQL statement, then "check MLFLOW_TRACKING_URI"
    from mlflow.version import VERSION

    half = tmp_path / "half.db"
    assert _fault(_store(half, "0a8213491aaa")) == (
        f"is half made ({HALF_MADE}), as a run stopped while MLflow made its tables leaves it, "
        f"and holds no runs; remove it (rm {half}), then run again"
    )
    cut = tmp_path / "cut.db"
    said = _fault(_store(cut, "0a8213491aaa", runs=2))
    assert said.startswith(
        f"holds 2 runs but its tables were left half upgraded to mlflow {VERSION}"
    )
    assert said.endswith(f"move it aside (mv {cut} {cut}.broken) to start anew")
    older = _store(tmp_path / "older.db", "0a8213491aaa", runs=2)
    said = _fault(older, "... run 'mlflow db upgrade <database_uri>' ...")
    assert said.endswith(f"back it up, then upgrade it: mlflow db upgrade {sqlite_uri(older)}")
    newer = _fault(_store(tmp_path / "newer.db", "ffffffffffff", runs=2))
    assert newer.startswith("was made by a newer MLflow (its schema ffffffffffff is unknown")
    (tmp_path / "text.db").write_text("not a database\n" * 100)
    assert _fault(tmp_path / "text.db").startswith("is no SQLite database (file is not a")
    assert _fault(_store(tmp_path / "current.db", _head())) is None  # another fault than these


def test_mlflow_refusing_a_broken_store_is_said_in_one_line(tmp_path: Path, monkeypatch) -> None:
    import sqlite3

    import mlflow.tracking

    class Client:  # MLflow on a half-made store
        def __init__(self, tracking_uri: str) -> None:
            pass

        def search_experiments(self, max_results: int) -> None:
            raise sqlite3.OperationalError(HALF_MADE)

    monkeypatch.setattr(mlflow.tracking, "MlflowClient", Client)
    store = _store(tmp_path / "shared" / "mlflow.db", "0a8213491aaa")
    with pytest.raises(
        ConfigError, match=rf"^run.loggers=mlflow: the MLflow store {store} is half"
    ):
        mlflow_store.opened(sqlite_uri(store))


def test_sefs_own_mlflow_store_is_made_anew_or_upgraded_aside(tmp_path: Path, monkeypatch) -> None:
    # a run folder's store that an older sef left half made stopped every later run into it,
    # and Ctrl-C while MLflow upgraded an older MLflow's store in place left it half upgraded,
    # its runs with it. The fake client upgrades a store: it writes this MLflow's revision.
    import sqlite3

    import mlflow.tracking

    stops = []

    class Client:
        def __init__(self, tracking_uri: str) -> None:
            self.path = mlflow_store.sqlite_file(tracking_uri)

        def search_experiments(self, max_results: int) -> None:
            if stops:
                raise KeyboardInterrupt
            with sqlite3.connect(self.path) as db:
                db.execute("CREATE TABLE IF NOT EXISTS runs (run_uuid TEXT)")
                db.execute("CREATE TABLE IF NOT EXISTS alembic_version (version_num TEXT)")
                db.execute("DELETE FROM alembic_version")
                db.execute("INSERT INTO alembic_version VALUES (?)", (_head(),))
            db.close()

    monkeypatch.setattr(mlflow.tracking, "MlflowClient", Client)
    store = tmp_path / "mlflow.db"
    mlflow_store.renew(_store(store, "0a8213491aaa"))
    assert mlflow_store._store_contents(store) == (_head(), 0)  # made anew
    store.unlink()
    mlflow_store.renew(_store(store, "0a8213491aaa", runs=2))
    assert mlflow_store._store_contents(store) == (_head(), 2)  # upgraded, runs and all
    store.unlink()
    stops.append(True)
    with pytest.raises(KeyboardInterrupt):
        mlflow_store.renew(_store(store, "0a8213491aaa", runs=2))
    assert mlflow_store._store_contents(store) == ("0a8213491aaa", 2)  # as it was
    assert list(tmp_path.iterdir()) == [store]
    mlflow_store.renew(_store(tmp_path / "whole.db", _head()))  # nothing to do: no client called


def test_a_stop_while_the_trackers_open_ends_the_runs_already_open(
    trackers_offline: Path, monkeypatch
) -> None:
    # Ctrl-C while MLflow opened its run left the W&B run opened before it running
    closed = []

    class Opened:
        id, resumed = "r1", False

        def __init__(self, *args) -> None:
            pass

        def close(self, finished: bool) -> None:
            closed.append(finished)

    monkeypatch.setattr(trackers, "OPENERS", {"wandb": Opened, "mlflow": _interrupt})
    config = load_preset("demo")
    config.run.loggers = ["wandb", "mlflow"]
    with pytest.raises(KeyboardInterrupt):
        Trackers(trackers_offline, config, [])
    assert closed == [False]


def test_an_mlflow_store_that_cannot_be_made_is_named_not_its_copy_aside(tmp_path: Path) -> None:
    # MLFLOW_TRACKING_URI under a file: "mlflow.db.88698c5a.partial: not a directory"
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError) as info:
        mlflow_store.make_store(tmp_path / "file" / "x" / "mlflow.db")
    assert info.value.filename == str(tmp_path / "file" / "x")


def test_a_wandb_project_wandb_refuses_is_said_before_the_run(monkeypatch) -> None:
    # WANDB_PROJECT=team/proj was refused only once the data had loaded and the trackers opened
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_PROJECT", "team/proj")
    with pytest.raises(ConfigError, match=r"^run.loggers=wandb: WANDB_PROJECT: Invalid project"):
        trackers.require(["wandb"])
