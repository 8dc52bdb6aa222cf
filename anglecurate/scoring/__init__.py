"""Scoring: a prompt dataset in, a ranked copy of it out (`anglecurate score`, `rank`).

Data flows through one module per stage, in this order (the rows come in chunks from
:mod:`anglecurate.data`)::

    config     the run's options, checked before any file is touched
    spec       the resolved run: model source, config, tokenizer, template, prompt,
               truncation; built from options or from a finished run's manifest, and the
               one place validate, the pilot, export and Ray rebuild a run from
    prompt     row -> chat conversation -> rendered text + the question's character span
    segments   text -> token ids + prefix / question / suffix token spans
    batching   the padded (or packed) tensors of each batch, planned by base.batches
    capture    forward hooks on each scored layer's MLP input, reduced by ``angles``
    angles/    the segment reduction: PyTorch paths, the Triton kernel, one dispatch point
    store      the output folder: atomic chunk files, resume, the global ranking
    merge      the end of a run: the global ranking and the manifest (sharded runs too)
    manifest   provenance: the run record compared on resume, the final manifest
    result     what a run did (ScoreResult), for summaries and ``--json``
    pipeline   runs the stages above for `score` (and `inspect`)

Beside the flow:

    ranking           pure: which stored value orders the rows (shared by `score` and `rank`)
    rerank            `anglecurate rank`: a finished ranking ordered again, swapped in atomically;
                      columns added to one (calibrate's p_pass, learnability)
    embeddings        `score --embed`: pooled question tokens streamed beside the ranking
    features          a ranking's stored prefill features as the learnability predictor's arrays
    gainrl_reference  the authors' per-prompt formula (``--metric gainrl-reference``)
    prompts/          the built-in prompt configs (TOML)
"""
