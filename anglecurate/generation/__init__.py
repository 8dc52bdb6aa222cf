"""Generation: one path from prompts to rewarded completions, for held-out evaluation and
for rollouts (k samples per prompt), on either engine.

request   the types: a GenerationRequest (prompts rendered as text, k, max_new_tokens,
          temperature, seed) and a GenerationResult (token ids, completions, counts)
hf        HF ``generate`` in left-padded, length-sorted batches under a token budget;
          seeded sampling that does not depend on the batch
vllm      vLLM: TRL's colocated engine shared from the trainer, or a fresh one (lazy import)
engine    the one dispatch point that picks hf or vllm
graded    the reward applied in one place: clipped rewards, pass rate, reward variance
"""
