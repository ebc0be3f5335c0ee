"""The one exception type for problems the user can fix.

Library code raises :class:`DepthcliError` for bad input (a missing file, a
malformed model, an output folder that already exists, ...). The CLI's error
boundary (:func:`depthcli.cli.main`) turns it into one red line on stderr with
the hint, and exit code 1. Internal invariants use ``assert`` instead.
"""

from __future__ import annotations


class DepthcliError(Exception):
    """A user-facing error: ``message`` says what is wrong, ``hint`` what to do."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message if not self.hint else f"{self.message} ({self.hint})"
