"""The ground floor: what every other floor may use, and which uses nothing of ours.

errors    UserError (a user's mistake: one line, exit code 2) and first_line
progress  the progress bar every long command shows (rows, tokens, rates, ETA)
batches   batch plans under a token budget, longest first (pure: scoring's and generation's)
"""

__version__ = "0.1.0"
