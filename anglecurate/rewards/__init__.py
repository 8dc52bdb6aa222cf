"""One reward system, for validate's RL target, the pilot's training and evaluation, and
every rollout: TRL's signature ``reward(completions, answer, **kwargs) -> list[float]``.

answers   final answers extracted and compared (``\\boxed{}``, the last number)
registry  the built-in rewards (``boxed``, ``number``) and the one resolver that also
          loads a user's ``module:function``
"""
