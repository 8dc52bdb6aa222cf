"""Scale-out: the same scoring run spread over processes, devices or a Ray cluster.

shard     pure: which rows a process scores (a stable hash of the uid mod N)
launch    ``--devices``: one child process per local device, no collectives
cluster   ``--engine ray``: chunks spread over a Ray actor pool
"""
