"""Evidence: does the ranking signal hold for this model and these data (`validate`)?

gradients   training targets from real backward passes (reference-answer loss,
            GRPO-style samples rewarded by :mod:`anglecurate.rewards`)
analysis    pure: confounds, per-feature correlations, choose on one half and check on
            the other (the statistics are :mod:`anglecurate.stats`'s)
validate    the command: sample the ranking, measure, analyse, write OUT/validate.*
"""
