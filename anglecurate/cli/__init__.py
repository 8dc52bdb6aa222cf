"""The `anglecurate` command: a thin layer over the library.

app       the app: registers the commands in --help's order and runs them; a UserError
          becomes one line on stderr and exit code 2
options   what the commands share: choice enums, help texts, shown defaults, interruptible
rank      score, merge, rank, inspect, show: a ranking made, merged, re-ranked, looked at
check     validate, calibrate, report: does the signal hold, what can the model learn from
train     schedule (and schedule update), pilot: what a trainer reads, and trainings that test it
usage     usage mistakes (a mistyped choice, an unknown option) as one line, exit code 2
display   terminal views (rich): a prompt's segments, the ends of a ranking, summaries
"""

from anglecurate.cli.app import app, main

__all__ = ["app", "main"]
