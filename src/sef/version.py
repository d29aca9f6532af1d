"""sef's version, written by hand beside pyproject's (tests/test_packaging.py checks they agree);
a leaf, so that modules ``sef`` itself loads (checkpoint.py records it) can import it."""

__version__ = "0.1.0"
