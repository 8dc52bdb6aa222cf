"""Schedules: the order a trainer sees the ranked prompts in (`anglecurate schedule`).

sampler      pure: GAIN-RL's seeded Gaussian window over ranks and its centre update
epochs       schedule folders: open-loop epochs up front, or closed loop one epoch at
             a time from trainer feedback (`schedule update`)
export       the trainers' files: rows in feed order for TRL, verl and OpenRLHF
curriculum   the closed loop inside a trainer, shared by the adapters
train_angle  the training-time angle, measured in the trainer's loss forward (hooks)
trl, verl    thin trainer adapters (public paths: ``anglecurate.trl``,
             ``anglecurate.verl``, as training scripts and verl configs name them)
"""
