"""One writer per output folder: an exclusive lock that says who holds it.

Every command that writes a folder (unsharded `score`, `rank`, `validate`, `report`,
`schedule`) holds ``FOLDER/.anglecurate.storage.lock`` for as long as it writes. A second writer is
refused at once, in one line naming the holder (pid, host, start time, command); sharded
runs do not take it (their shards cooperate through their own markers).

How a lock is judged:

- The file is ``flock``-ed while held. The kernel drops that lock when its process dies,
  however it dies, so on one machine a lock whose ``flock`` can be taken was left by a
  killed process and is taken over (with a warning): ``kill -9`` then resume just works.
- The holder also touches the file every ``heartbeat_s`` (a daemon thread). On a shared
  file system whose locks do not span machines, a lock written by another host is live
  while its heartbeat is younger than ``stale_after_s``, and taken over once it is older.
- Where ``flock`` is unsupported, a same-host lock is live while its pid runs and its
  heartbeat is fresh (a reused pid has no heartbeat).

The lock is re-entrant within a process (`score` re-ranking a finished folder takes it
again through `rank`'s code path). Releasing removes the file, and the folder too when
the lock created it and nothing else was written: a refused or failed command leaves no
trace.

:func:`named_lock` is the same lock under any file name: the ranking lock
(``OUT/.anglecurate/ranking.lock``, held while one process builds a folder's ranking: the
merge of a sharded run or a re-rank) is one, so a ``kill -9`` there is taken over the same
way. Re-entrancy is keyed by the lock file, so a folder's writer lock and its ranking lock
are held independently.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from anglecurate.base.errors import UserError
from anglecurate.storage.faults import storage_errors

LOCK_NAME = ".anglecurate.storage.lock"
HEARTBEAT_S = 15.0
STALE_AFTER_S = 120.0


class FolderBusy(UserError):
    """Another live process is writing this folder."""


@dataclass
class _Held:
    fd: int
    path: Path
    created: bool
    stop: threading.Event
    depth: int = 1


@dataclass(frozen=True)
class _Label:
    """How a lock names itself in its refusal and take-over messages."""

    shown: str
    what: str
    doing: str
    hint: str
    busy: type[UserError]


_held: dict[str, _Held] = {}
_held_guard = threading.Lock()


def holder_info(command: str | None = None) -> dict:
    """What a lock file records about its holder."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command if command is not None else " ".join(["anglecurate", *sys.argv[1:]]),
    }


def read_holder(folder: str | Path) -> dict | None:
    """The holder recorded in ``folder``'s lock file, or None when there is none."""
    try:
        return json.loads((Path(folder) / LOCK_NAME).read_text() or "null")
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@contextmanager
def folder_lock(
    folder: str | Path,
    command: str | None = None,
    heartbeat_s: float = HEARTBEAT_S,
    stale_after_s: float = STALE_AFTER_S,
):
    """Hold ``folder``'s writer lock (creating the folder if needed) inside the block.

    Raises :class:`FolderBusy` when a live process holds it. OS errors (a read-only or full
    file system) propagate for the caller's storage-error handling."""
    with named_lock(Path(folder) / LOCK_NAME, command, heartbeat_s, stale_after_s):
        yield


@contextmanager
def named_lock(
    path: str | Path,
    command: str | None = None,
    heartbeat_s: float = HEARTBEAT_S,
    stale_after_s: float = STALE_AFTER_S,
    *,
    shown: str | Path | None = None,
    what: str = "the lock",
    doing: str = "written",
    hint: str = "wait for it to finish, stop it, or choose another folder",
    busy: type[UserError] = FolderBusy,
):
    """Hold the lock file ``path`` (creating its folder if needed) inside the block, judged
    as the module docstring says. A live holder raises ``busy`` in one line: "``shown`` is
    being ``doing`` by <holder>; ``hint``" (``shown`` defaults to the lock's folder); a dead
    one's is taken over with the warning "took over ``what`` on ``shown`` ..."."""
    path = Path(path)
    folder = path.parent
    key = os.path.join(os.path.realpath(folder), path.name)
    with _held_guard:
        held = _held.get(key)
        if held is not None:
            held.depth += 1
    if held is not None:
        try:
            yield
        finally:
            with _held_guard:
                held.depth -= 1
        return
    label = _Label(str(shown if shown is not None else folder), what, doing, hint, busy)
    held = _acquire(path, command, heartbeat_s, stale_after_s, label)
    with _held_guard:
        _held[key] = held
    try:
        yield
    finally:
        with _held_guard:
            _held.pop(key, None)
        _release(folder, held)


def _acquire(
    path: Path, command: str | None, heartbeat_s: float, stale_after_s: float, label: _Label
) -> _Held:
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file; pass a folder path (it is created)")
    try:
        folder.mkdir(parents=True)
        created = True
    except FileExistsError:
        created = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            locked = _try_flock(fd)
            if locked is False:
                raise label.busy(_busy(label, _read(fd)))
            if not _same_file(fd, path):  # its previous holder removed it as we opened it
                os.close(fd)
                continue
            previous = _read(fd)
            if previous is not None:
                if _alive(previous, path, locked, stale_after_s):
                    raise label.busy(_busy(label, previous))
                print(f"warning: {_took_over(label, previous)}", file=sys.stderr)
            _write(fd, holder_info(command))
        except label.busy:
            os.close(fd)  # the file is the holder's: leave it
            raise
        except BaseException:
            mine = _same_file(fd, path)
            os.close(fd)
            if mine:  # we held it (and may have cut its content): leave no half-written lock
                _remove_lock(folder, path, created)
            raise
        stop = threading.Event()
        threading.Thread(target=_heartbeat, args=(fd, stop, heartbeat_s), daemon=True).start()
        return _Held(fd, path, created, stop)


def _release(folder: Path, held: _Held) -> None:
    held.stop.set()
    try:
        if _same_file(held.fd, held.path):
            held.path.unlink(missing_ok=True)
    finally:
        os.close(held.fd)  # drops the flock
    if held.created:
        _remove_lock(folder, held.path, created=True)


def _try_flock(fd: int) -> bool | None:
    """True: locked; False: another open file holds it; None: the file system has no flock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            return None
        raise


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _read(fd: int) -> dict | None:
    data = os.pread(fd, 1 << 16, 0)
    if not data.strip():
        return None  # a new lock file
    try:
        info = json.loads(data)
    except json.JSONDecodeError:
        info = None
    return info if isinstance(info, dict) else {}  # {}: half-written by a holder killed mid-write


def _write(fd: int, info: dict) -> None:
    data = (json.dumps(info) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _alive(previous: dict, path: Path, locked: bool | None, stale_after_s: float) -> bool:
    """Whether the recorded holder still writes, given that we could take the flock
    (``locked`` True) or that the file system has none (None)."""
    try:
        fresh = time.time() - os.stat(path).st_mtime < stale_after_s
    except FileNotFoundError:
        return False
    host = previous.get("host")
    if host is None:  # half-written by a holder killed mid-write
        return locked is None and fresh
    if host != socket.gethostname():
        return fresh  # another machine's process: only its heartbeat tells
    pid = previous.get("pid")
    return isinstance(pid, int) and _pid_running(pid) and fresh and pid != os.getpid()


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _heartbeat(fd: int, stop: threading.Event, every: float) -> None:
    while not stop.wait(every):
        try:
            os.utime(fd)
        except OSError:
            return  # released (fd closed) or the file system went away: nothing to refresh


def _describe(info: dict) -> str:
    if not info.get("pid"):
        return "another process"
    command = info.get("command") or "anglecurate"
    return f"pid {info['pid']} on {info.get('host', '?')}, `{command}`, since {info.get('started', '?')}"


def _busy(label: _Label, info: dict | None) -> str:
    return f"{label.shown} is being {label.doing} by {_describe(info or {})}; {label.hint}"


def _took_over(label: _Label, info: dict) -> str:
    return (
        f"took over {label.what} on {label.shown} left by {_describe(info)}, which is no longer running; "
        "finished work in it is kept"
    )


def _remove_lock(folder: Path, lock: Path, created: bool) -> None:
    """Remove our lock file, and the folder when we created it and it is left empty."""
    try:
        lock.unlink(missing_ok=True)
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    except OSError:
        pass  # best effort: a folder we cannot tidy is left as it is


@contextmanager
def exclusive_writer(folder: str | Path, lock: bool = True, create: bool = True):
    """The writer's side of a command: ``folder``'s lock and storage faults inside the block
    as one-line errors. ``lock`` False: no lock (a shard of a sharded run). ``create`` False:
    a command that only adds to an existing folder (`rank`, `validate`, `report`) takes no
    lock on a missing one and leaves the command's own check to say what is missing."""
    lock = lock and (create or Path(folder).is_dir())
    with storage_errors(folder), folder_lock(folder) if lock else nullcontext():
        yield
