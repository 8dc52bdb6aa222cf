"""Pilots: short side-by-side GRPO trainings that measure whether an order pays off.

plan      the settings, the folder layout, the train / held-out split and the micro-batch
arms      each arm's order of the training rows (uniform, gainrl, gainrl-open, length, reverse,
          calibrated, pass-rate)
measured  the calibrated and pass-rate orders: rollouts by `calibrate` on a copy of the ranking
evaluate  held-out accuracy: the generation engine's answers, graded by the training reward
record    what a run records: its curve (per evaluation) and steps (per optimizer step,
          the zero-variance share), written as it trains
train     one (arm, seed) run with TRL's GRPOTrainer: checkpoints, resume
summary   speedups to uniform with bootstrap intervals, and the plain-language verdict
cost      generated tokens and wall seconds, per arm and in uniform runs of the budget
figure    pilot.png
run       every run of a pilot, then pilot.parquet, pilot_steps.parquet, pilot.json, pilot.png
"""
