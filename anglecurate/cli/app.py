"""The `anglecurate` command: thin wrappers that build a config and call one library function.

The commands live by what they work on (:mod:`~anglecurate.cli.rank`,
:mod:`~anglecurate.cli.check`, :mod:`~anglecurate.cli.train`); this module registers them,
in the order ``--help`` lists them, and runs the app. Heavy imports (torch, transformers,
polars) happen inside the commands so ``--help`` is instant. A
:class:`~anglecurate.base.errors.UserError` becomes one line on stderr and exit code 2;
``ANGLECURATE_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys

import typer

from anglecurate.base.errors import UserError
from anglecurate.cli import check, rank, train

app = typer.Typer(
    name="anglecurate",
    help="Rank prompt datasets for RL fine-tuning by layer-wise angle concentration (GAIN-RL).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(rank.score)
app.command("merge")(rank.merge_shards)
app.command()(rank.rank)
app.command()(check.validate)
app.command()(check.calibrate)
app.command()(check.report)
app.command()(rank.inspect)
app.command()(rank.show)
app.add_typer(train.schedule_app, name="schedule")
app.command()(train.pilot)


def main() -> None:
    """Entry point: run the app, turning user errors, usage mistakes included (an unknown
    option, a mistyped choice), into one line and exit code 2."""
    from anglecurate.cli.usage import UsageError, is_help_request, usage_line
    from anglecurate.storage.faults import storage_error

    args = sys.argv[1:]
    try:
        # Not standalone: typer's usage errors come here instead of its multi-line box, and
        # an exit code (typer.Exit, --help) is returned instead of raised.
        code = app(args=args, standalone_mode=False)
    except UsageError as exc:
        if is_help_request(exc):  # a bare `anglecurate` or `anglecurate schedule`: its help
            exc.show()
        else:
            print(f"error: {usage_line(exc, args)}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:  # end of input at a prompt, or Ctrl-C outside a command
        print("Aborted!", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:
        # A storage fault outside the library's writers (a full disk while printing JSON to
        # a file, say) is a user's problem too: one line, not a traceback.
        err = exc if isinstance(exc, UserError) else storage_error(exc)
        if err is None or os.environ.get("ANGLECURATE_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
