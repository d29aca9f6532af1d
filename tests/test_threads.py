"""Fair use of a shared CPU: `sef` starts OpenMP with passive waiting and the CPUs it may use,
unless the user chose; loader workers never outnumber the CPUs; the busy-machine benchmark runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sef import datasets, predict, threads
from sef.datasets import cache, checking
from sef.trained import load_trained_model

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SHOW = (
    "import os, sys\n"
    "from sef.cli import main\n"
    "main(['presets', 'demo'])\n"
    "import torch\n"
    "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('OMP_NUM_THREADS'),"
    " torch.get_num_threads(), file=sys.stderr)\n"
)


def test_configure_sets_only_what_the_user_left_unset() -> None:
    assert threads.configure(env := {}) == env
    assert env == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(threads.available_cpus())}
    mine = {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "3"}
    assert threads.configure(mine) == {} and mine == {"OMP_WAIT_POLICY": "ACTIVE",
                                                       "OMP_NUM_THREADS": "3"}  # fmt: skip


def test_cpus_follow_the_affinity_and_workers_never_outnumber_them() -> None:
    cpus = threads.available_cpus()
    if hasattr(os, "sched_getaffinity"):
        assert 1 <= cpus <= len(os.sched_getaffinity(0))
    assert threads.loader_workers(cpus + 8) == cpus
    assert threads.loader_workers(0) == 0


def test_every_pool_that_decodes_images_stays_within_the_cpus(
    monkeypatch, cub_root: Path, demo_checkpoint: Path, tmp_path: Path
) -> None:
    """`sef data cache --workers 16`, `sef predict --workers 16` and a run's `--cache auto` build
    started 16 processes on 2 CPUs (torch warned twice of it), and the image check as many
    threads: they now take at most the CPUs, as the training and evaluation loaders did."""
    monkeypatch.setattr(threads, "available_cpus", lambda: 1)
    started = []

    def counted(real, key: str, run_with: int):
        def make(*args, **kwargs):
            started.append(kwargs[key])
            return real(*args, **{**kwargs, key: run_with})  # no process started here

        return make

    monkeypatch.setattr(cache, "DataLoader", counted(cache.DataLoader, "num_workers", 0))
    monkeypatch.setattr(predict, "DataLoader", counted(predict.DataLoader, "num_workers", 0))
    pool = counted(checking.ThreadPoolExecutor, "max_workers", 1)
    monkeypatch.setattr(checking, "ThreadPoolExecutor", pool)
    splits = [datasets.load("cub", cub_root, split) for split in cache.SPLITS]
    cache.ensure(tmp_path / "c", splits, list, "resize", 16, workers=16, progress=False)
    checking.find_bad_images(splits[0].samples, workers=16, progress=False)
    image = splits[1].samples[0][0]
    predict.predict_images(load_trained_model(demo_checkpoint), [image], workers=16, progress=False)
    assert started == [1, 1, 1]


def _started(env: dict) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", SHOW], env=env, capture_output=True, text=True, check=True
    )
    return done.stderr.split()


@pytest.mark.slow
def test_the_command_starts_torch_with_passive_waits_unless_the_user_chose() -> None:
    bare = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    cpus = str(threads.available_cpus())
    assert _started(bare) == ["PASSIVE", cpus, cpus]  # torch took the thread count sef set
    assert _started({**bare, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "active"}) == [
        "active", "1", "1"
    ]  # fmt: skip


@pytest.mark.slow
def test_the_busy_machine_benchmark_runs_both_ways(tmp_path: Path) -> None:
    out = tmp_path / "busy.json"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "busy.py"), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["images_per_second"]) == {"torch_idle", "torch_busy", "sef_idle", "sef_busy"}
    assert set(report["slowdown_when_busy"]) == {"torch", "sef"}
    assert report["sef_idle_time_over_torch_idle"]["median"] > 0
    assert all(r["threads"] >= 1 for r in report["runs"]["sef_busy"])
    assert report["load_1min"]["n"] == 4 and report["command"].startswith("python ")


def test_the_training_and_evaluation_loaders_start_no_more_workers_than_cpus() -> None:
    import torch
    from torch.utils.data import TensorDataset

    from sef.distributed import Context
    from sef.engine import train_loader
    from sef.engine.evaluation import evaluation_loader

    data = TensorDataset(torch.zeros(8, 3, 4, 4), torch.zeros(8, dtype=torch.long))
    many = threads.available_cpus() + 6  # the folder and csv presets ask for 8
    loader = train_loader(data, batch_size=4, workers=many, seed=0, context=Context())
    assert loader.num_workers == threads.available_cpus()
    assert evaluation_loader(data, 4, many, Context()).num_workers == loader.num_workers
