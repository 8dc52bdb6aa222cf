"""The model at the edge: loading a checkpoint, and finding what to hook in it.

load     a local directory, a GGUF file or ``builtin:``, its config, tokenizer,
         dtype and device; the base model (or the causal LM for validate)
layers   structure discovery: the decoder stack and each block's MLP, found by
         structure (a probe forward), not by attribute names
"""
