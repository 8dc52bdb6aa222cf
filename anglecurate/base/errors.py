"""User-facing errors: one actionable line, exit code 2, never a bare traceback.

Library code raises :class:`UserError` for anything the user can fix (a bad path, a missing
column, an unsupported model). The CLI turns it into one line on stderr and exit code 2;
``ANGLECURATE_DEBUG=1`` re-raises so the traceback is visible.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake in the user's input or environment, with a message that says what to do."""

    exit_code = EXIT_USER_ERROR


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for a
    one-line error that quotes a library's failure."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
