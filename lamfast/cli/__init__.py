"""The ``lamfast`` command line: thin click commands over the library.

Errors from bad input (``LamfastError`` or a click usage error) print one line,
``Error: <message>``, on stderr and exit with status 2; no traceback, no partial output.
"""

from .commands import cli, main

__all__ = ["cli", "main"]
