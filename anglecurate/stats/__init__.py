"""Pure statistics on per-row arrays, shared by the ranking, validate and the report.

correlation  Spearman with bootstrap intervals, partial correlations, family-wise
             (max-T permutation) p-values
sampling     stratified samples over a ranking, and halves that both span it
isotonic     a monotone fit on length: the score beyond what length explains
"""
