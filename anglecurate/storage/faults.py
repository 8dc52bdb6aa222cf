"""Faults a long run meets, each turned into one line that says what to do.

- Storage errors while writing (a full disk, a quota, a read-only file system, a folder
  without write permission): :func:`storage_error` recognises them, whether Python raised
  them (``OSError`` with an errno) or a library did (polars reports the OS error inside its
  own message, ``... (os error 28)``), and :func:`storage_errors` turns them into a
  :class:`UserError` naming the path. The writers remove their partial files themselves
  (see :func:`anglecurate.scoring.store.atomic_write_parquet`); finished work stays.
- SIGTERM (a scheduler ending a job): :func:`sigterm_as_interrupt` makes it raise
  :class:`Terminated`, a ``KeyboardInterrupt``, so it unwinds exactly like Ctrl-C: the
  current chunk is dropped, finished chunks are kept, locks are released.
"""

from __future__ import annotations

import errno
import re
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

from anglecurate.base.errors import UserError

RESUME = "rerun the same command to resume"

# errno -> (what happened, its preposition, what to do about it). Only writes fill a disk or
# meet a read-only file system; permissions and I/O errors can hit a read too.
STORAGE_ERRORS = {
    errno.ENOSPC: ("no space left on device", "while writing", "free space"),
    errno.EDQUOT: ("disk quota exceeded", "while writing", "free space or raise the quota"),
    errno.EROFS: ("read-only file system", "while writing", "choose a writable folder"),
    errno.EACCES: ("permission denied", "on", "fix its permissions or choose another folder"),
    errno.EPERM: ("operation not permitted", "on", "fix its permissions or choose another folder"),
    errno.EIO: ("input/output error", "on", "check the storage"),
}
_OS_ERROR_IN_MESSAGE = re.compile(r"os error (\d+)")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C."""

    exit_code = 143  # 128 + SIGTERM, as a shell reports a job ended by it


def storage_errno(exc: BaseException) -> int | None:
    """The storage errno behind ``exc`` (one of :data:`STORAGE_ERRORS`), or None."""
    for err in _chain(exc):
        code = err.errno if isinstance(err, OSError) else None
        if code is None:
            found = _OS_ERROR_IN_MESSAGE.search(str(err))
            code = int(found.group(1)) if found else None
        if code in STORAGE_ERRORS:
            return code
    return None


def storage_error(
    exc: BaseException, path: str | Path | None = None, exact: bool = False
) -> UserError | None:
    """A one-line UserError for a storage fault, naming the file (``path`` when ``exact``,
    else ``exc.filename`` when Python knows it, else ``path``); None when ``exc`` is no
    storage fault."""
    code = storage_errno(exc)
    if code is None:
        return None
    what, preposition, fix = STORAGE_ERRORS[code]
    where = (
        None
        if exact
        else next((e.filename for e in _chain(exc) if isinstance(e, OSError) and e.filename), None)
    )
    where = where or path
    target = f" {preposition} {where}" if where else ""
    return UserError(f"{what}{target}; {fix} and {RESUME}")


@contextmanager
def storage_errors(path: str | Path | None = None):
    """Turn a storage fault raised inside the block into a one-line :class:`UserError`."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        err = storage_error(exc, path)
        if err is None:
            raise
        raise err from exc


@contextmanager
def sigterm_as_interrupt():
    """Inside the block SIGTERM raises :class:`Terminated`; the previous handler comes back
    on exit. A no-op off the main thread, where Python cannot install signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted_line(exc: KeyboardInterrupt, kept: str = "finished chunks are kept") -> tuple[str, int]:
    """The one line (and exit code) for Ctrl-C or SIGTERM."""
    what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
    code = exc.exit_code if isinstance(exc, Terminated) else 130
    return f"{what}: {kept}; {RESUME}", code


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__
