"""Evidence: does the ranking signal hold for this model and these data (`validate`)?

stats       pure rank statistics: Spearman with bootstrap intervals, partial
            correlations, family-wise p-values, stratified samples and halves
gradients   training targets from real backward passes (reference-answer loss,
            GRPO-style samples and rewards)
analysis    pure: confounds, per-feature correlations, choose on one half and check on
            the other
validate    the command: sample the ranking, measure, analyse, write OUT/validate.*
"""
