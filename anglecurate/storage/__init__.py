"""Files at the edge: how every command writes its outputs.

faults    storage errors (full disk, quota, read-only, permissions) and SIGTERM as one line
atomic    files written whole or not at all (temporary name, rename into place)
lock      one writer per folder: flock + holder record + heartbeat, taken over when stale
"""
