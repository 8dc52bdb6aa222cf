"""The `anglecurate` command: a thin layer over the library.

app       the Typer commands: each builds a config and calls one library function;
          a UserError becomes one line on stderr and exit code 2
usage     usage mistakes (a mistyped choice, an unknown option) as one line, exit code 2
display   terminal views (rich): a prompt's segments, the ends of a ranking, summaries
"""

from anglecurate.cli.app import app, main

__all__ = ["app", "main"]
