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
