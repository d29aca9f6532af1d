"""Rank 0's record of a run: metrics.jsonl, TensorBoard scalars, the trackers of run.loggers
(W&B, MLflow: :mod:`sef.trackers`) and a line per epoch."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from tqdm import tqdm

from sef import outputs
from sef.config import Config
from sef.engine.evaluation import heads_trained
from sef.engine.loop import GRADIENT_SPIKE
from sef.text import rate
from sef.trackers import Final, Trackers, scalars


def _finite_or_null(value):
    """``value`` with every NaN or infinity (in lists too) made None: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return [_finite_or_null(v) for v in value]
    return value


def _json_line(record: dict) -> str:
    """One metrics.jsonl line, strict JSON (a non-finite number is written null), so that any
    JSON reader (jq, pandas, JavaScript) takes the file."""
    finite = {key: _finite_or_null(value) for key, value in record.items()}
    return json.dumps(finite, allow_nan=False) + "\n"


def _write_lines(path: Path, records: list[dict]) -> None:
    """Rewrite metrics.jsonl atomically: a reader or a killed run never sees half a line."""
    outputs.write_text(path, "".join(_json_line(r) for r in records))


def _correlation(record: dict) -> str:
    """The training batches' channel correlation within / between groups, where there are."""
    if "train_corr_within" not in record:
        return ""
    return f"  corr {record['train_corr_within']:.3f}/{record['train_corr_between']:.3f}"


def spike_line(record: dict) -> str | None:
    """A warning where one step's gradient was ``GRADIENT_SPIKE`` times the epoch's median."""
    largest, median = record.get("grad_norm_max"), record.get("grad_norm_median")
    if not median or largest < GRADIENT_SPIKE * median:
        return None
    return (
        f"epoch {record['epoch']}: one step's gradient was {largest / median:.0f} x the epoch's "
        f"median ({largest:.3g} against {median:.3g}); such a step can undo what training had "
        "learnt (docs/training.md, gradient spikes)"
    )


def tensorboard_on(config: Config) -> bool:
    """Whether the run writes TensorBoard events (``run.tensorboard: false``, the older switch,
    turns them off whatever ``run.loggers`` names)."""
    return config.run.tensorboard and "tensorboard" in config.run.loggers


def _event_writer(folder: Path, start_epoch: int):
    """TensorBoard's writer of ``folder``; OutputError naming the folder if it cannot be written
    (a file of that name, a folder of another user), not the bare "tb: file exists"."""
    from torch.utils.tensorboard import SummaryWriter

    try:
        return SummaryWriter(str(folder), purge_step=start_epoch)
    except OSError as error:
        raise outputs.output_error(folder, error, folder=True) from None


def _board_epochs(folder: Path) -> int:
    """The last epoch TensorBoard's events in ``folder`` hold (0 if none), a session's start
    dropping the epochs from its own on, as TensorBoard reads them: sessions with TensorBoard
    off left a gap in its charts, which the next session with it on fills."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.compat.proto.event_pb2 import SessionLog

    last = 0
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            if event.session_log.status == SessionLog.START:
                last = min(last, event.step - 1)
            elif event.summary.value:
                last = max(last, event.step)
    return last


class Logger:
    """Rank 0's outputs: metrics.jsonl, TensorBoard scalars, trackers and a line per epoch."""

    def __init__(self, out: Path, config: Config, history: list[dict], start_epoch: int):
        self.metrics = out / "metrics.jsonl"
        self.records = list(history)  # resume drops lines the checkpoint does not cover
        _write_lines(self.metrics, self.records)
        self.board = None
        if tensorboard_on(config):
            held = _board_epochs(out / "tb")  # on resume, as a tracker's: the epochs it lacks
            self.board = _event_writer(out / "tb", start_epoch)
            for record in self.records:
                if record["epoch"] > held:
                    self._to_board(record)
            self.board.flush()
        self.trackers = Trackers(out, config, self.records)
        self.heads_trained = heads_trained(config)

    def _to_board(self, record: dict) -> None:
        for key, value in scalars(record).items():
            self.board.add_scalar(key, value, record["epoch"])

    def epoch(self, record: dict, epochs: int) -> None:
        self.records.append(record)
        _write_lines(self.metrics, self.records)
        if self.board is not None:
            self._to_board(record)
            self.board.flush()
        self.trackers.epoch(record)
        groups = " ".join(f"{v:.3f}" for v in record["eval_group_top1"])
        groups = groups if self.heads_trained else "untrained"
        tqdm.write(
            f"epoch {record['epoch']}/{epochs}  lr {record['lr']:.2g}  "
            f"loss {record['loss_total']:.4f}  train {record['train_top1']:.3f}  "
            f"eval top1 {record['eval_top1']:.3f}  class-mean {record['eval_class_mean']:.3f}  "
            f"groups [{groups}]{_correlation(record)}  {record['seconds']:.0f}s  "
            f"{rate(record['images_per_second'])} img/s",
            file=sys.stdout,
        )
        spike = spike_line(record)
        if spike:
            tqdm.write(spike, file=sys.stdout)

    def finish(self, final: Final) -> None:
        """The finished run's report and files, for the trackers."""
        self.trackers.finish(final)

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
        self.trackers.close()
