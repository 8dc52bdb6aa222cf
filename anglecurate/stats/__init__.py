"""Pure statistics on per-row arrays, shared by the ranking, validate, the report and
calibration.

correlation   Spearman and AUROC with bootstrap intervals, partial correlations,
              family-wise (max-T permutation) p-values
sampling      stratified samples over a ranking, and halves that both span it
isotonic      a monotone fit on length: the score beyond what length explains
learnability  the pass rate predicted from the prefill features, judged on held-out folds
"""
