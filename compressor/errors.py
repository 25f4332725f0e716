"""Errors a user can act on: each carries a one-line message (what is wrong, where, and the fix) and an exit code."""

from __future__ import annotations


class CompressorError(Exception):
    """Base of every error the CLI turns into a one-line message; exit code 1."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(CompressorError):
    """The command line itself is wrong (unknown --set key, unknown target name...); exit code 2."""

    exit_code = 2


class CheckpointError(CompressorError):
    """A checkpoint is missing, corrupt, unsafe to load, or does not fit its architecture."""


class ConfigError(CompressorError):
    """A target, profile or model card file is missing or invalid."""


class OutputError(CompressorError):
    """The output folder cannot be written."""


class ExportError(CompressorError):
    """The model could not be exported for the target's runtime."""


class ParityError(CompressorError):
    """An exported artifact disagrees with the original model beyond the target's tolerance."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text, for embedding in a one-line message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def validation_summary(exc) -> str:
    """One line out of a pydantic ValidationError: the first problem and where it is."""
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"]) or "(top level)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {err['msg']}{more}"
