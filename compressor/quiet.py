"""Silence libraries that log and print progress of their own (NNCF, ONNX Runtime's quantizer, torchao):
the CLI reports its own steps, and their chatter would bury compressor's one-line messages."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def quieted(logger_names: tuple[str, ...], stderr: bool = False) -> Iterator[None]:
    """Raise these loggers ("" is the root logger) to ERROR and swallow stdout (and stderr) for the block."""
    loggers = [logging.getLogger(name) for name in logger_names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    silence_stderr = contextlib.redirect_stderr(io.StringIO()) if stderr else contextlib.nullcontext()
    try:
        with contextlib.redirect_stdout(io.StringIO()), silence_stderr:
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 itself at /dev/null for the block: C++ libraries (the LiteRT converter and
    interpreter, absl) write their INFO lines there directly, past Python's sys.stderr. Errors still surface:
    they are raised as exceptions, and the CLI prints those after the block."""
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
