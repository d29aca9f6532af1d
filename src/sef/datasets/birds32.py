"""``birds32``: a built-in fine-grained set with CUB's proportions, for fine-tuning pretrained nets.

The demo's birds (:mod:`sef.datasets.demo`) with five two-way parts -- head, wing, tail, breast,
feet -- so 32 classes that differ only in small parts, on cluttered backgrounds, with every
image's part centres in ``ds.parts``. Default size: 30 training and 25 test images per class
(960 / 800; CUB has about 30 / 29) at 128 px. Generated on first use into
``$SEF_CACHE/birds32`` (or ``~/.cache/sef/birds32``), like the demo set.
"""

from __future__ import annotations

from sef.datasets.demo import BIRDS32, reader_of

CLASSES = BIRDS32.classes
read = reader_of(BIRDS32, per_class=30, test_per_class=25, resolution=128, generation_seed=0)
