"""Prompt data: where rows come from, and how they are read in chunks.

sources   a --data spec to files: a file, a folder or glob of shards, a save_to_disk
          folder, builtin:NAME, or a hub dataset id (through the local cache)
formats   one file at a time: format, content hash, JSONL lines, JSON arrays, Arrow
dataset   the files as one Dataset of rows, in fixed chunks across shard boundaries
shard     pure: which rows a process reads when several share a run (a stable hash of
          the uid mod N)
columns   columns named by an option (struct fields dotted), or the first usual name
          present: the reference answers validate and calibrate reward against
"""
