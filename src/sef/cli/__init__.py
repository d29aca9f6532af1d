"""The `sef` command: a thin shell over the library.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable
taking the parsed arguments and returning an exit code.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import importlib
import multiprocessing
import os
import signal
import sys
import warnings

from sef import __version__, extras, outputs, threads
from sef.errors import ConfigError, SEFError, original_message, said_to_command

COMMAND_MODULES = [
    "info", "train", "eval", "score", "presets", "viz", "predict", "export", "data", "reproduce"
]  # fmt: skip
# The commands that share their work over torchrun's processes; the others run in one.
TORCHRUN_COMMANDS = ("train", "eval", "reproduce")


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage error under torchrun rank 0 alone prints (each process
    printed the usage and the error); its sub-commands' parsers are of its class."""

    def error(self, message: str):
        if _said_by_rank_zero(SEFError(message)):
            self.exit(2)
        super().error(message)


def create_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sef",
        description="SEF: semantically enhanced features for fine-grained image classification.",
    )
    parser.add_argument("--version", action="version", version=f"sef {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"sef.cli.{name}").register(subparsers)
    return parser


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The parser of the (sub-)command that ``args`` chose, e.g. `sef viz cam`'s."""
    while True:
        chosen = [
            action.choices[getattr(args, action.dest)]
            for action in parser._actions
            if isinstance(action, argparse._SubParsersAction)
            and getattr(args, action.dest, None) in action.choices
        ]
        if not chosen:
            return parser
        parser = chosen[0]


def _one_line(error: Exception) -> str:
    """The error's message; an OSError that no sef check foresaw as "FILE: reason"."""
    if isinstance(error, OSError) and error.strerror and not isinstance(error, SEFError):
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror.lower()}"
    return original_message(error)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors become one line on stderr and exit code 2, warnings one line."""
    threads.configure()  # before any command imports torch: OpenMP reads it once, at start
    _escape_what_output_cannot_write()
    try:
        parser = create_parser()  # reads the presets: PyYAML
    except ImportError as error:
        return _missing_dependency(error, "sef")
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the usage of the command given, not of `sef` as argparse would print
        _command_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:  # a command is required: the help, as for any usage error
        parser.print_help(sys.stderr)
        return 2
    stopped: list[int] = []
    try:
        with _warnings_as_lines(_said_as(args)), _stops_as_interrupts(stopped), _stdout_said():
            return _run(args, stopped)
    except KeyboardInterrupt:  # a stop as the command let go of the signals, its work done
        return 128 + (stopped[-1] if stopped else signal.SIGINT)


# How sef's stdout and stderr write what their encoding cannot (_bytes_or_escape).
OUTPUT_ERRORS = "sef.bytes_or_escape"


def _escape_what_output_cannot_write() -> None:
    """stdout and stderr write what their encoding cannot as :func:`_bytes_or_escape` does: a
    Chinese class name on an ASCII terminal (PYTHONIOENCODING=ascii, a Windows code page) or a
    folder name that is not UTF-8 on a terminal that refuses surrogates ended the command in
    "codec can't encode"."""
    codecs.register_error(OUTPUT_ERRORS, _bytes_or_escape)
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) in ("strict", "surrogateescape", "backslashreplace"):
            stream.reconfigure(errors=OUTPUT_ERRORS)


def _bytes_or_escape(error: UnicodeError) -> tuple[str | bytes, int]:
    """A codec error handler: a file name's byte that was no text in the file system's encoding
    (which Python holds as a surrogate, U+DC80 to U+DCFF) as that byte, as surrogateescape writes
    it, so that `ls` and sef show a name alike; any other character as an escape (``\\u516b``),
    as backslashreplace writes it."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    char = error.object[error.start]
    if "\udc80" <= char <= "\udcff":
        return bytes([ord(char) - 0xDC00]), error.start + 1
    one = UnicodeEncodeError(error.encoding, error.object, error.start, error.start + 1, "")
    return codecs.backslashreplace_errors(one)


def program() -> None:
    """The `sef` program (its console script, ``python -m sef``): :func:`main`, then the
    interpreter's exit, which a stop ends at once and quietly (:func:`_exit_on_stops`)."""
    _exit_on_stops()
    sys.exit(main())


def _stops_taken() -> list[int]:
    """The stop signals sef handles: those not ignored when it started (`nohup` ignores SIGHUP,
    a background job SIGINT), which stay ignored."""
    return [n for n in outputs.STOPS if signal.getsignal(n) not in (signal.SIG_IGN, None)]


def _exit_on_stops() -> None:
    """Until the process ends, a stop outside a command (which handles its own) ends it at once
    with 128 + signal: Ctrl-C just after `sef train` printed its last line, while the exit joined
    loader workers or a logger's thread or ran torch's atexit hooks, was a KeyboardInterrupt
    traceback from atexit or threading, and exit code 0."""
    for number in _stops_taken():
        signal.signal(number, lambda number, frame: os._exit(128 + number))


@contextlib.contextmanager
def _warnings_as_lines(command: str):
    """While a command runs, each warning is one line on stderr, "sef COMMAND: warning: ...",
    instead of Python's file, line number and source line (DataLoader workers fork with it);
    under torchrun only rank 0's, as every process reads the same data and meets the same
    warnings (each printed them once per process)."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if os.environ.get("RANK", "0") != "0":  # torchrun's rank of this process
            return
        text = " ".join(str(message).split())
        with contextlib.suppress(OSError):  # as Python's own: a closed stderr is no error
            print(f"sef {command}: warning: {text}", file=file or sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


class _Stdout:
    """sys.stdout, whose failure to write (a full disk under `sef predict ... > file`) is an
    OutputError that says it was the command's output, not a bare "no space left on device"; a
    closed pipe stays a BrokenPipeError, which ends a command quietly."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def write(self, text: str) -> int:
        return self._said(self._stream.write, text)

    def flush(self) -> None:
        self._said(self._stream.flush)

    @staticmethod
    def _said(method, *args):
        try:
            return method(*args)
        except BrokenPipeError:
            raise
        except OSError as error:
            raise outputs.stdout_error(error) from error


@contextlib.contextmanager
def _stdout_said():
    """While a command runs, sys.stdout is a :class:`_Stdout` (unless there is none)."""
    stream = sys.stdout
    if stream is not None:
        sys.stdout = _Stdout(stream)
    try:
        yield
    finally:
        sys.stdout = stream


@contextlib.contextmanager
def _stops_as_interrupts(stopped: list[int] | None = None):
    """While a command runs, Ctrl-C, SIGTERM and SIGHUP (a job scheduler, a closed terminal) stop
    it with a KeyboardInterrupt; yields ``stopped`` (a new list by default) with the signals
    received, in order. A signal ignored when the command
    started (`nohup`, a background job's Ctrl-C) stays ignored; the handlers before are restored
    after. Loader workers forked meanwhile end at once on these signals, and the command ends them
    before it stops: one left running while it sent a batch printed a ConnectionResetError
    traceback, or kept the terminal after the command had ended. A stopping command counts no
    worker's death as a failure: a scheduler (Slurm, `timeout`) signals the whole process group,
    and a torch worker sent SIGTERM by anyone but its parent dies of it, which torch's SIGCHLD
    handler raised as a RuntimeError traceback (exit code 1) in the middle of the stop."""
    stopped = [] if stopped is None else stopped
    owner = os.getpid()
    child_exits: list = []  # SIGCHLD's handler before a stop quieted it

    def stop(number: int, frame) -> None:
        if os.getpid() != owner:  # a loader worker forked with this handler
            os._exit(0)  # any other code is a worker failure to torch's loader
        if hasattr(signal, "SIGCHLD") and not child_exits:  # a no-op, not SIG_DFL: Python
            # prints a traceback for a signal already pending when its handler was removed
            child_exits.append(signal.signal(signal.SIGCHLD, lambda number, frame: None))
        _end_workers()
        stopped.append(number)
        raise KeyboardInterrupt

    try:
        with outputs.signals_handled(_stops_taken(), stop):
            yield stopped
    finally:
        for before in child_exits:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL if before is None else before)


def _end_workers() -> None:
    """End the processes this one forked (loader workers, each ending at once on a stop signal)
    and wait for them: one forked a moment before may miss the first signal, so it is sent again."""
    workers = multiprocessing.active_children()
    for _ in range(3):
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.join(1)
        workers = [worker for worker in workers if worker.is_alive()]


def _said_as(args: argparse.Namespace) -> str:
    """The command as its lines name it: with its action or figure (`data download`, `viz
    cam`), as argparse's own usage errors do."""
    action = getattr(args, "data_command", None) or getattr(args, "figure", None)
    return f"{args.command} {action}" if action else args.command


@said_to_command()  # its advice, a dead loader worker's included, names the command's options
def _run(args: argparse.Namespace, stopped: list[int]) -> int:
    """Run the chosen command; user errors become one line on stderr and exit code 2."""
    try:
        _check_torchrun(args)
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe (`sef presets | head`) is not an error
        return code
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return 0
    except (SEFError, ValueError, OSError, RuntimeError) as error:
        said = _one_line(error) if not isinstance(error, RuntimeError) else _not_a_bug(error)
        if said is None or os.environ.get("SEF_DEBUG"):
            raise
        _end_workers()  # a loader worker left mid-batch printed a traceback after the line
        if not _said_by_rank_zero(error):
            print(f"sef {_said_as(args)}: error: {said}", file=sys.stderr)
        return 2
    except ImportError as error:
        return _missing_dependency(error, f"sef {_said_as(args)}")
    except KeyboardInterrupt as stop:  # its message, if any, says what was kept (sef train)
        number = stopped[0] if stopped else signal.SIGINT
        by = "" if number == signal.SIGINT else f" by {signal.Signals(number).name}"
        said = f"; {stop.args[0]}" if stop.args else ""
        if not _said_by_rank_zero(stop):
            print(f"sef {_said_as(args)}: interrupted{by}{said}", file=sys.stderr)
        return 128 + number


def _not_a_bug(error: RuntimeError) -> str | None:
    """What a RuntimeError that is no bug of sef's says in one line: another of torchrun's
    processes ended under this one (sef.distributed.peer_gone: the survivor printed gloo's
    traceback), or a loader worker died or filled /dev/shm (sef.engine.data.worker_death), where
    the command did not say it itself (sef train does, with the checkpoint it kept); None for
    any other RuntimeError, a bug to show with its traceback."""
    from sef import distributed
    from sef.engine.data import worker_death

    return distributed.PEER_ENDED if distributed.peer_gone(error) else worker_death(error)


def _check_torchrun(args: argparse.Namespace) -> None:
    """ConfigError for a command that runs in one process, launched by torchrun on several:
    each process did the whole work (`sef predict` printed its table once per process, `sef
    data cache` built the cache twice at once)."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if args.command in TORCHRUN_COMMANDS or processes <= 1:
        return
    shared = ", ".join(TORCHRUN_COMMANDS[:-1]) + f" and {TORCHRUN_COMMANDS[-1]}"
    raise ConfigError(
        f"{_said_as(args)} runs in one process and torchrun started {processes}, each of which "
        f"would do all of its work: run it without torchrun ({shared} share their work over "
        f"torchrun's processes)"
    )


def _missing_dependency(error: ImportError, prog: str) -> int:
    """Exit code 2 after one line naming the pip command if ``error`` is a dependency of sef
    that the install lacks; ``error`` raised again otherwise."""
    said = extras.missing_dependency(error)
    if said is None or os.environ.get("SEF_DEBUG"):
        raise error
    if not _said_by_rank_zero(error):
        print(f"{prog}: error: {said}", file=sys.stderr)
    return 2


def _said_by_rank_zero(error: BaseException) -> bool:
    """Whether torchrun's rank 0 says ``error``, not this process (sef.distributed.said_by_main);
    outside torchrun, which sets WORLD_SIZE, torch is not loaded to ask."""
    if "WORLD_SIZE" not in os.environ:
        return False
    from sef.distributed import said_by_main

    return said_by_main(error)


if __name__ == "__main__":
    program()
