"""The exceptions lamfast raises for bad input (one-line messages)."""

from __future__ import annotations


class LamfastError(ValueError):
    """Bad input or an unsupported request, with a one-line message naming the problem.

    The CLI turns it into ``Error: <message>`` on stderr and exit code 2.
    """


class LamfastTypeError(LamfastError, TypeError):
    """An argument of the wrong kind (objects that are not numbers); also a ``TypeError``."""
