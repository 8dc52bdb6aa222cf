"""Schedules: the order a trainer sees the ranked prompts in (`anglecurate schedule`).

sampler      pure: GAIN-RL's seeded Gaussian window over ranks and its centre update
epochs       schedule folders: open-loop epochs up front, or closed loop one epoch at
             a time from trainer feedback (`schedule update`)
export       the trainers' files: rows in feed order for TRL, verl, OpenRLHF and trainers
             that read data in order; difficulty fields for AdaRFT and Trinity-RFT
curriculum   the closed loop inside a trainer, shared by the adapters
train_angle  the training-time angle, measured in the trainer's loss forward (hooks)
trl          the TRL adapter (public path ``anglecurate.trl``)
verl         verl's sampler, for verl 0.5 to 0.7 (public path ``anglecurate.verl``)
verl_dataset  verl's dataset class, for verl 0.7 to 0.9 (also ``anglecurate.verl``)
"""
