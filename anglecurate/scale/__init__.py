"""Scale-out: the same scoring run spread over processes, devices or a Ray cluster.

launch    ``--devices``: one child process per local device, no collectives (each
          scores a shard, :mod:`anglecurate.data.shard`)
cluster   ``--engine ray``: chunks spread over a Ray actor pool
"""
