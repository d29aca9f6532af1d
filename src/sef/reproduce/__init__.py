"""The paper's experiments from one command: `sef reproduce table2|table3` (docs/reproduce.md).

- :mod:`~sef.reproduce.paper`: the paper's numbers as data (``paper.yaml``)
- :mod:`~sef.reproduce.plan`: which runs a table needs (rows x datasets -> presets, folders)
- :mod:`~sef.reproduce.state`: what a run folder holds (new, half-finished, finished)
- :mod:`~sef.reproduce.estimate`: GPU hours from the recipe and a stated images/s
- :mod:`~sef.reproduce.tables`: our rows beside the paper's, with the Score (Markdown, CSV)
- :mod:`~sef.reproduce.runner`: trains the runs in order, resumable, under torchrun too
"""

from sef.reproduce.plan import parse_data
from sef.reproduce.runner import Outcome, reproduce

__all__ = ["Outcome", "parse_data", "reproduce"]
