"""The one exception type lamfast raises for bad input."""

from __future__ import annotations


class LamfastError(ValueError):
    """Bad input or an unsupported request, with a one-line message naming the problem.

    The CLI turns it into ``Error: <message>`` on stderr and exit code 2.
    """
