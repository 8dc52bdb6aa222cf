"""Calibration (`anglecurate calibrate`): measured pass rates on a sample of a ranking, and a
pass rate predicted for every row from what scoring stored.

settings  the options, checked first; which of them a rerun must repeat to resume
sample    pure: the rows rolled out, stratified over the ranking's order (or a caller's
          own), and where a row stands in an order
rollouts  k completions per sampled prompt, in the rendering the rows were scored in, by
          the generation floor, rewarded; stored one prompt at a time (a rerun resumes)
cost      pure: the bound said before it starts, and what it took
run       the command: checks, cost, rollouts, the learnability fit, p_pass and
          learnability added to every ranked row, OUT/calibrate.json and .parquet
"""
