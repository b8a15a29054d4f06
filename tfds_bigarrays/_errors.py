"""The one base class of every error tfds_bigarrays raises for its users."""

from __future__ import annotations


class TfdsBigarraysError(Exception):
    """Base of every user-facing tfds_bigarrays error.

    Each subclass also derives from the builtin error that fits it
    (`ValueError` for bad input, `FileExistsError`, `RuntimeError`...), so
    that code catching those keeps working. The CLI reports any of them as a
    one-line error with exit status 2.
    """


class MissingDependencyError(TfdsBigarraysError, ImportError):
    """An optional dependency is not installed (the message names the extra)."""
