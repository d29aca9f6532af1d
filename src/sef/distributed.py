"""Process-group plumbing for ``torchrun``: one process per device, rank 0 does the talking.

Outside torchrun every helper degrades to the single-process case, so the engine has one code
path. Evaluation shards indices without padding (``shard``), so each test image is counted once.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from sef.choices import DEVICE_WORDS, is_device
from sef.errors import ConfigError, SEFError
from sef.text import counted

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)


@dataclass(frozen=True)
class Context:
    """Where this process sits: its rank among ``world_size`` and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # whether ``setup`` created the process group (and ends it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(request: str, local_rank: int = 0) -> torch.device:
    """The device ``request`` names: ``auto`` is CUDA when a GPU is visible, else the CPU; ``cuda``
    is this process's GPU (``local_rank``); ConfigError for CUDA without a visible GPU. Every
    command's --device goes through here."""
    if not is_device(request):
        raise ConfigError(f"device {request!r} is invalid: it must be {DEVICE_WORDS}")
    if request == "auto":
        request = "cuda" if torch.cuda.is_available() else "cpu"
    if request.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device {request!r} needs a CUDA GPU and none is visible; use cpu or auto"
        )
    if request == "cuda":
        return torch.device("cuda", local_rank)
    if request == "cpu":
        return torch.device("cpu")
    device = torch.device(request)  # cuda:N
    count = torch.cuda.device_count()
    if device.index >= count:
        names = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise ConfigError(
            f"device {request!r} is not there: {counted(count, 'GPU')} visible, {names}"
        )
    return device


_joined = False  # whether this process has joined torchrun's process group (``setup``)
# How long another process that met an error before joining waits for torchrun to stop it, as it
# does once rank 0 has failed: one that ended at once had rank 0 stopped before it said the error.
RANK_ZERO_GRACE = 10.0


def _launched_world_size() -> int:
    """The number of processes torchrun started (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: str = "auto") -> Context:
    """Join the torchrun process group if launched by torchrun; pick this process's device."""
    global _joined
    world_size = _launched_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = resolve_device(device, local_rank)
    if world_size <= 1:
        return Context(device=chosen)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    owns_group = not dist.is_initialized()
    if owns_group:
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=chosen if chosen.type == "cuda" else None)
    _joined = True
    return Context(dist.get_rank(), dist.get_world_size(), chosen, owns_group)


def is_main_process() -> bool:
    """Whether this process is rank 0, the one that prints and writes (True outside torchrun);
    known before ``setup`` (from the launcher's RANK) as well as after."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def said_by_main(error: BaseException) -> bool:
    """Whether rank 0 says ``error`` and this process, another of torchrun's, stays quiet: an
    error marked ``from_main``; a stop, which torchrun (and a terminal's Ctrl-C) sends every
    process; an error met before this process joined the group, where every process checks the
    same command line alike (a bad --set value), once torchrun has stopped this process for rank
    0's failure (within ``RANK_ZERO_GRACE`` seconds, else it says its own). False on rank 0 and
    outside torchrun."""
    if is_main_process() or _launched_world_size() <= 1:
        return False
    if getattr(error, "from_main", False) or isinstance(error, KeyboardInterrupt):
        return True
    return not _joined and _stopped_within(RANK_ZERO_GRACE)


def _stopped_within(seconds: float) -> bool:
    """Whether a stop (the `sef` command's KeyboardInterrupt) comes within ``seconds``."""
    try:
        time.sleep(seconds)
    except KeyboardInterrupt:
        return True
    return False


def teardown(context: Context) -> None:
    """Leave the process group if ``setup`` joined it (a caller's own group stays up)."""
    if context.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: Context) -> None:
    if context.distributed:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, context: Context) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over all processes (in place, also returned)."""
    if context.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(model: torch.nn.Module, context: Context) -> None:
    """Copy rank 0's buffers (e.g. BatchNorm running statistics) to every process."""
    if context.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def broadcast_object(value: object, context: Context) -> object:
    """Rank 0's ``value`` on every process (picklable Python objects only)."""
    if not context.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(compute: Callable[[], T], context: Context) -> T:
    """Rank 0's ``compute()`` on every process. A SEFError there, or a stop (KeyboardInterrupt:
    torchrun sends every process one, and a process waiting for the answer in a collective
    cannot take its own until the answer comes), is raised on every process, so no rank is left
    waiting; the other ranks' copy is marked ``from_main`` (the CLI prints it once, from rank 0)."""
    answer = None
    if context.is_main:
        try:
            answer = (True, compute())
        except SEFError as error:
            if not context.distributed:
                raise
            answer = (False, error)
        except KeyboardInterrupt:
            if context.distributed:
                _stop_the_waiting(lambda: broadcast_object((False, KeyboardInterrupt()), context))
            raise
    ok, value = broadcast_object(answer, context)
    if not ok:
        value.from_main = not context.is_main
        raise value
    return value


def on_every(compute: Callable[[], T], context: Context, *, main_first: bool = False) -> T:
    """``compute()`` on every process; with ``main_first`` on rank 0 before the others, which then
    find what it wrote (a demo set generated on first use, which every process generated at once).
    A SEFError or OSError on any process is raised on all of them, the lowest rank's, marked
    ``from_main`` off rank 0: the CLI prints it once, where every process printed the same line,
    and a process whose error was its own no longer leaves the others waiting (they died of a
    gloo traceback). A stop (KeyboardInterrupt) in ``compute()`` is passed on likewise."""
    if not context.distributed:
        return compute()
    turns = (context.is_main, not context.is_main) if main_first else (True,)
    value = None
    for mine in turns:  # whether this process computes in this turn
        error = None
        if mine:
            try:
                value = compute()
            except (SEFError, OSError) as raised:  # what the CLI says in one line
                error = raised
            except KeyboardInterrupt:
                _stop_the_waiting(lambda: _raise_any(KeyboardInterrupt(), context))
                raise
        _raise_any(error, context)
    return value


def _stop_the_waiting(join: Callable[[], object]) -> None:
    """``join()`` the collective the other processes wait in, after this one was stopped: they
    wait in C code, where torchrun's stop cannot reach them until it ends (both were killed 30 s
    later); a peer that has gone (stopped too) is no error here, nor is another rank's error."""
    with contextlib.suppress(Exception):
        join()


def _raise_any(error: BaseException | None, context: Context) -> None:
    """Raise on every process the error of the lowest rank that has one (None: no error)."""
    errors = [None] * context.world_size
    dist.all_gather_object(errors, error)
    first = next((rank for rank, found in enumerate(errors) if found is not None), None)
    if first is None:
        return
    found = error if first == context.rank else errors[first]
    found.from_main = not context.is_main
    raise found


# How a collective of gloo (third_party/gloo/gloo/transport/tcp/pair.cc, a path its errors
# name) or NCCL reports that a process of the group has gone.
PEER_GONE = (
    "Connection closed by peer", "Connection reset by peer", "Broken pipe",
    "remote process exited",
)  # fmt: skip
# What a process says when another of torchrun's ended under it.
PEER_ENDED = (
    "another of torchrun's processes ended while this one waited for it: torchrun's report "
    "below names it and its exit code (-9: killed, most often by the system as memory ran out)"
)


def peer_gone(error: BaseException) -> bool:
    """Whether ``error`` is a collective's failure because another process of the group ended
    (killed, or failed with an error of its own): the survivor died of gloo's traceback."""
    text = str(error)
    backend = "gloo" in text or "NCCL" in text
    return isinstance(error, RuntimeError) and backend and any(w in text for w in PEER_GONE)


def reworded(error: E, message: str) -> E:
    """An error of ``error``'s kind saying ``message``, still marked ``from_main`` if ``error``
    was: rank 0 alone says a reworded error too."""
    said = type(error)(message)
    said.from_main = getattr(error, "from_main", False)
    return said


def shard(length: int, context: Context) -> range:
    """This process's share of ``range(length)``: every index in exactly one shard, no padding."""
    return range(context.rank, length, context.world_size)
