"""The progress display: step k/n, a bar with done/total in a terminal, rate-limited plain lines with an ETA in a
CI log, warnings on the same console."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from compressor.api import Steps
from compressor.progress import ConsoleProgress, LogToConsole


class Recorder:
    def __init__(self) -> None:
        self.events = []

    def step_started(self, name, number, total):
        self.events.append(("start", name, number, total))

    def step_advanced(self, name, text, done, total):
        self.events.append(("advance", name, done, total))

    def step_finished(self, name, ok, seconds):
        self.events.append(("end", name, ok))


def test_steps_count_k_of_n_and_pass_done_and_total():
    recorder = Recorder()
    steps = Steps(recorder, planned=2)
    steps.run("load", lambda: steps.progress("load")("3/4 batches", 3, 4))
    steps.run("export", lambda: None)
    steps.run("unplanned", lambda: None)  # a step the plan did not count stretches n rather than showing 3/2
    with pytest.raises(ValueError):
        steps.run("broken", lambda: int("x"))
    assert recorder.events == [
        ("start", "load", 1, 2), ("advance", "load", 3, 4), ("end", "load", True),
        ("start", "export", 2, 2), ("end", "export", True),
        ("start", "unplanned", 3, 3), ("end", "unplanned", True),
        ("start", "broken", 4, 4), ("end", "broken", False),
    ]
    assert set(steps.seconds) == {"load", "export", "unplanned"}


def _plain() -> tuple[ConsoleProgress, io.StringIO]:
    out = io.StringIO()
    return ConsoleProgress(Console(file=out, force_terminal=False, width=200), every=3600), out


def test_plain_lines_in_a_log_are_rate_limited_and_say_what_is_left():
    progress, out = _plain()
    progress.step_started("quality model.onnx", 11, 13)
    progress.step_advanced("quality model.onnx", "inception-v3 features 32/256 images", 32, 256)  # within `every`: quiet
    progress.step_advanced("quality model.onnx", "inception-v3 features 256/256 images", 256, 256)  # the last always shows
    progress.step_finished("quality model.onnx", True, 12.5)
    lines = out.getvalue().splitlines()
    assert lines[0] == "[11/13] quality model.onnx ..."
    assert lines[1].startswith("[11/13] quality model.onnx: inception-v3 features 256/256 images, ") and "elapsed" in lines[1]
    assert lines[2] == "✓ [11/13] quality model.onnx 12.5 s" and len(lines) == 3


def test_plain_lines_give_an_eta_from_the_pace_so_far():
    progress, out = _plain()
    progress.every = 0.0
    progress.step_started("export", 4, 13)
    progress._started["export"] -= 10  # ten seconds in, a quarter done
    progress.step_advanced("export", "calibration 4/16 batches", 4, 16)
    assert "about 30 s left" in out.getvalue()


def test_a_terminal_gets_a_bar_that_goes_away_when_the_step_ends():
    out = io.StringIO()
    progress = ConsoleProgress(Console(file=out, force_terminal=True, width=120))
    progress.step_started("sensitivity", 1, 1)
    progress.step_advanced("sensitivity", "5/20 settings", 5, 20)
    task = progress._bar.tasks[0]
    assert (task.completed, task.total) == (5, 20) and (task.description, task.fields["detail"]) == ("[1/1] sensitivity", "5/20 settings")
    progress.step_finished("sensitivity", True, 3.0)
    assert progress._bar is None and "sensitivity" in out.getvalue()


def test_warnings_and_notes_go_through_the_shared_console():
    out = io.StringIO()
    logger = logging.getLogger("compressor.test-progress")
    handler = LogToConsole(Console(file=out, force_terminal=False, width=80))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.warning("a warning longer than the console is wide, which must stay on one line in a CI log, unbroken")
        logger.info("FID: 512 images")
    finally:
        logger.removeHandler(handler)
    assert out.getvalue().splitlines() == [
        "warning: a warning longer than the console is wide, which must stay on one line in a CI log, unbroken",
        "FID: 512 images",
    ]
