"""``birds32b``: birds32's twin for confirming on unseen data what a study found on birds32.

The same birds, five parts in the same places and order (so G = 5 is still one group per part),
sizes, backgrounds and default size as :mod:`sef.datasets.birds32` (30 training and 25 test
images per class at 128 px), but every part has two other variants -- head ``plain`` or
``striped`` (a stripe through the eye), wing ``plain`` or ``tipped`` (a coloured tip), tail
``short`` or ``long`` (longer and narrower), breast ``clear`` or ``banded`` (one band across it),
feet on ``short`` or ``long`` legs -- and the default generation seed is 1 (birds32's is 0).
Generated on first use into ``$SEF_CACHE/birds32b`` (or ``~/.cache/sef/birds32b``).
"""

from __future__ import annotations

from sef.datasets.demo import BIRDS32B, reader_of

CLASSES = BIRDS32B.classes
read = reader_of(BIRDS32B, per_class=30, test_per_class=25, resolution=128, generation_seed=1)
