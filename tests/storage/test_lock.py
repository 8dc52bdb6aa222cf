"""The writer lock: a live holder in another process refuses, a dead one is taken over,
another host's lock lives as long as its heartbeat; no trace is left behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from anglecurate.storage.lock import LOCK_NAME, FolderBusy, folder_lock, read_holder

HOLD = """
import sys, time
from anglecurate.storage.lock import folder_lock
with folder_lock(sys.argv[1], command="anglecurate score --out X"):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(folder):
    """A second process holding ``folder``'s lock, started and confirmed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_holder_in_another_process_refuses_with_who_holds_it(tmp_path):
    folder = tmp_path / "out"
    proc = _holder(folder)
    try:
        with pytest.raises(FolderBusy) as info, folder_lock(folder):
            pass
        message = str(info.value)
        assert "\n" not in message
        assert f"pid {proc.pid} on {socket.gethostname()}" in message
        assert "`anglecurate score --out X`" in message
        assert (folder / LOCK_NAME).exists(), "the holder's lock must survive a refused attempt"
    finally:
        proc.terminate()
        proc.wait()


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_warning(tmp_path, capsys):
    folder = tmp_path / "out"
    proc = _holder(folder)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert read_holder(folder)["pid"] == proc.pid  # kill -9 left it behind
    with folder_lock(folder, command="second"):
        assert read_holder(folder)["pid"] == os.getpid()
        assert read_holder(folder)["command"] == "second"
    err = capsys.readouterr().err
    assert f"took over the lock on {folder}" in err and f"pid {proc.pid}" in err
    assert folder.is_dir() and not any(folder.iterdir()), "the lock is gone, the folder as it was"


def _planted(folder, host, pid, age_s):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    path.write_text(json.dumps({"pid": pid, "host": host, "started": "then", "command": "anglecurate rank"}))
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_another_hosts_lock_lives_while_its_heartbeat_is_fresh(tmp_path):
    folder = tmp_path / "shared"
    _planted(folder, "node-7", 4242, age_s=5)
    with pytest.raises(FolderBusy, match="pid 4242 on node-7"), folder_lock(folder, stale_after_s=60):
        pass
    _planted(folder, "node-7", 4242, age_s=600)
    with folder_lock(folder, stale_after_s=60):
        assert read_holder(folder)["host"] == socket.gethostname()
    assert folder.exists() and not (folder / LOCK_NAME).exists()  # it was there before us: kept


def test_a_same_host_lock_of_a_pid_that_is_gone_is_stale(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _planted(tmp_path, socket.gethostname(), gone.pid, age_s=0)
    with folder_lock(tmp_path):
        assert read_holder(tmp_path)["pid"] == os.getpid()


def test_the_lock_is_reentrant_in_one_process_and_released_once(tmp_path):
    folder = tmp_path / "out"
    with folder_lock(folder):
        with folder_lock(folder):
            assert (folder / LOCK_NAME).exists()
        assert (folder / LOCK_NAME).exists(), "the inner release must not drop the outer hold"
    assert not folder.exists()


def test_the_heartbeat_refreshes_the_lock(tmp_path):
    with folder_lock(tmp_path, heartbeat_s=0.05):
        path = tmp_path / LOCK_NAME
        old = time.time() - 1000
        os.utime(path, (old, old))
        deadline = time.monotonic() + 5
        while os.stat(path).st_mtime < old + 500 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert os.stat(path).st_mtime > old + 500


def test_a_file_where_the_folder_should_be_is_one_line(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    with pytest.raises(Exception, match="is a file; pass a folder path"), folder_lock(path):
        pass
    assert path.read_text() == "x"


HOLD_NAMED = """
import sys, time
from anglecurate.storage.lock import named_lock
with named_lock(sys.argv[1], command="anglecurate merge X"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_named_lock_is_the_same_lock_held_apart_from_the_folder_lock(tmp_path, capsys):
    """A folder's writer lock and another lock file in it are separate locks (re-entrancy is
    keyed by the file), each refusing a live holder and taking over a killed one."""
    from anglecurate.storage.lock import named_lock

    folder = tmp_path / "out"
    ranking = folder / ".anglecurate" / "ranking.lock"
    cmd = [sys.executable, "-c", HOLD_NAMED, str(ranking)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    try:
        with (
            folder_lock(folder),  # ours: does not make the other process's lock ours
            pytest.raises(FolderBusy, match=f"being written by pid {proc.pid}"),
            named_lock(ranking),
        ):
            pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert ranking.exists()  # kill -9 left it behind
    with folder_lock(folder), named_lock(ranking, what="the ranking lock", shown=folder):
        assert json.loads(ranking.read_text())["pid"] == os.getpid()
        assert read_holder(folder)["pid"] == os.getpid()
    assert f"took over the ranking lock on {folder}" in capsys.readouterr().err
    assert not ranking.exists() and not (folder / LOCK_NAME).exists()
