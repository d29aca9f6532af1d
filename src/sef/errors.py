"""Errors a user can cause and fix. The CLI prints their message as one line and exits 2."""


class SEFError(Exception):
    """Base class: the message names the file or value at fault and what to do."""


class ConfigError(SEFError, ValueError):
    """A bad preset, config key, or config value."""


class DataError(SEFError):
    """A dataset root, metadata file, or image that cannot be used."""


class CheckpointError(SEFError):
    """A checkpoint that is missing, corrupt, or unsafe to load."""


class IncompleteCheckpoint(CheckpointError):
    """A checkpoint cut short or damaged (a copy that did not finish): another copy is the fix."""


class OutputError(SEFError):
    """An output file or folder that cannot be written; ``problem`` is what went wrong, without
    the advice the message ends with (for callers that advise otherwise)."""

    def __init__(self, message: str, problem: str | None = None) -> None:
        super().__init__(message)
        self.problem = problem or message


class DiskFull(OutputError):
    """An output that did not fit: its disk (or quota) is full."""


class WeightsError(SEFError):
    """Pretrained weights that cannot be found, downloaded, or loaded."""


class TrainingError(SEFError):
    """Training that cannot go on, e.g. a loss that became NaN or infinite."""


class OutOfMemory(SEFError):
    """The CPU's or a GPU's memory ran out: the message says which batch and what to lower."""


def original_message(error: Exception) -> str:
    """The message of an error raised in a DataLoader worker, which torch raises again with the
    worker's traceback for message ("Caught X in DataLoader worker process 0. Original
    Traceback ... X: message"); any other error's message as it is."""
    text, name = str(error), type(error).__qualname__
    if not text.startswith(f"Caught {type(error).__name__} ") or f"{name}: " not in text:
        return text
    return text[text.rindex(f"{name}: ") + len(name) + 2 :].strip()
