"""How a run's progress reaches a person: rich bars with an ETA in a terminal, plain periodic lines in a CI log.

`api.Steps` tells a listener when each pipeline step starts ("step k/n"), advances through its long loop
(calibration batches, sensitivity settings, training steps, images through Inception) and ends. The CLI's
listener is `ConsoleProgress`; warnings and notes of the 'compressor' logger go through the same console
(`LogToConsole`), so a warning printed during a bar lands above it instead of inside it.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

PLAIN_EVERY_SECONDS = 15.0  # a CI log gets a line at most this often per step: alive, but not flooded


class StepListener(Protocol):
    """What `api.Steps` tells about each step of a run."""

    def step_started(self, name: str, number: int, total: int) -> None: ...

    def step_advanced(self, name: str, text: str, done: int | None, total: int | None) -> None: ...

    def step_finished(self, name: str, ok: bool, seconds: float) -> None: ...


_console: Console | None = None


def console() -> Console:
    """The one stderr console that progress, warnings and notes share (stdout stays for results: JSON, tables)."""
    global _console
    if _console is None:
        _console = Console(stderr=True, highlight=False)
    return _console


class ConsoleProgress:
    """A bar per running step in a terminal; start, periodic and end lines when stderr is not one (CI, a pipe)."""

    def __init__(self, target: Console | None = None, every: float = PLAIN_EVERY_SECONDS) -> None:
        self.console = target or console()
        self.every = every
        self._bar: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._labels: dict[str, str] = {}
        self._last_line: dict[str, float] = {}
        self._started: dict[str, float] = {}

    @property
    def interactive(self) -> bool:
        return self.console.is_terminal

    def step_started(self, name: str, number: int, total: int) -> None:
        label = f"[{number}/{total}] {name}" if total else name
        self._labels[name], self._started[name], self._last_line[name] = label, time.monotonic(), time.monotonic()
        if not self.interactive:
            self.console.print(f"{label} ...", markup=False, soft_wrap=True)
            return
        if self._bar is None:
            self._bar = _bar(self.console)
            self._bar.start()
        self._tasks[name] = self._bar.add_task(label, total=None, detail="")

    def step_advanced(self, name: str, text: str, done: int | None, total: int | None) -> None:
        label = self._labels.get(name, name)
        if self.interactive and name in self._tasks:
            self._bar.update(self._tasks[name], detail=text, completed=done or 0, total=total)
            return
        now = time.monotonic()
        if now - self._last_line.get(name, 0.0) < self.every and not (total and done == total):
            return
        self._last_line[name] = now
        self.console.print(f"{label}: {text}{_eta(now - self._started.get(name, now), done, total)}", markup=False, soft_wrap=True)

    def step_finished(self, name: str, ok: bool, seconds: float) -> None:
        label = self._labels.pop(name, name)
        if name in self._tasks:
            self._bar.remove_task(self._tasks.pop(name))
            if not self._tasks:
                self._bar.stop()
                self._bar = None
        if ok:  # a failed step says nothing here: its one-line error follows
            self.console.print(f"[green]✓[/green] {escape(label)} [dim]{seconds:.1f} s[/dim]")


def _bar(target: Console) -> Progress:
    """'⠙ [11/13] quality model.onnx ━━━━━━╸━━━━━  96/256 0:00:05 eta 0:00:09 inception-v3 features 96/256 images':
    the step, then the numbers, then the loop's own words (what is cut first on a narrow terminal)."""
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(bar_width=24), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[detail]}", markup=False),
        console=target, transient=True,
    )


def _eta(elapsed: float, done: int | None, total: int | None) -> str:
    """', 40 s elapsed, about 25 s left' for a plain line, from the pace so far."""
    if not done or not total or done >= total:
        return f", {elapsed:.0f} s elapsed"
    return f", {elapsed:.0f} s elapsed, about {elapsed / done * (total - done):.0f} s left"


class LogToConsole(logging.Handler):
    """The 'compressor' logger's records on the shared console: 'warning: ...' lines, and notes (INFO: the expected
    cost of a long step) as they are. Printed through the console, they appear above a running bar."""

    def __init__(self, target: Console | None = None) -> None:
        super().__init__(logging.INFO)
        self.target = target or console()

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        prefix = "warning: " if record.levelno >= logging.WARNING else ""
        self.target.print(f"{prefix}{text}", markup=False, highlight=False, soft_wrap=True)
