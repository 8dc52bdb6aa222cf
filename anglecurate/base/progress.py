"""Progress display: a rich bar on stderr (rows/s, tokens/s, ETA), or nothing with --quiet."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class _RateColumn(ProgressColumn):
    """rows/s from rich's own speed estimate, tokens/s from the task's token field."""

    def render(self, task) -> Text:
        rows = task.speed or 0.0
        elapsed = max(time.perf_counter() - task.fields.get("t0", time.perf_counter()), 1e-9)
        tokens = task.fields.get("tokens", 0) / elapsed
        return Text(f"{rows:,.1f} rows/s  {tokens:,.0f} tok/s", style="progress.data.speed")


class RowProgress:
    """The bar of any row-by-row command (score, validate, a pilot's scoring): a context
    manager; ``advance(rows, tokens)`` after each batch, ``log(line)`` for a line a user
    reads as the work goes (a pilot's held-out accuracy at each evaluation).

    ``enabled`` False: silent. ``bar`` False (stderr is not a terminal: a log file, a
    pipeline): no bar, but every ``log`` line still goes to stderr, so a pilot running for
    hours under ``nohup`` says where it is."""

    def __init__(self, enabled: bool = True, bar: bool = True):
        self.enabled = enabled
        self.bar = enabled and bar
        self._progress: Progress | None = None
        self._task = None
        self._tokens = 0

    def __enter__(self) -> RowProgress:
        if self.bar:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                _RateColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def log(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(message)
        elif self.enabled:
            print(message, file=sys.stderr, flush=True)

    def start(self, description: str, total: int, completed: int = 0) -> None:
        if self._progress is not None:
            self._task = self._progress.add_task(
                description, total=total, completed=completed, tokens=0, t0=time.perf_counter()
            )

    def advance(self, rows: int, tokens: int = 0) -> None:
        self._tokens += tokens
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=rows, tokens=self._tokens)
