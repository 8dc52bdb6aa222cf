"""Scoring: a prompt dataset in, a ranked copy of it out (`anglecurate score`, `rank`).

Data flows through one module per stage, in this order (``pipeline`` runs them; the rows
come in chunks from :mod:`anglecurate.data`)::

    config     the run's options, checked before any file is touched
    prompt     row -> chat conversation -> rendered text + the question's character span
    segments   text -> token ids + prefix / question / suffix token spans
    batching   length-bucketed padded (or packed) batches under a token budget
    capture    forward hooks on each scored layer's MLP input, reduced by ``angles``
    angles/    the segment reduction: PyTorch paths, the Triton kernel, one dispatch point
    store      atomic chunk files in OUT, resume
    merge      the end of a run: the global ranking and the manifest (sharded runs too)
    ranking    pure: which stored value orders the rows (shared by `score` and `rank`)

``gainrl_reference`` is the authors' per-prompt formula (``--metric gainrl-reference``),
and ``prompts/`` holds the built-in prompt configs.
"""
