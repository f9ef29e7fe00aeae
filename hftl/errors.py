"""Errors a user can act on. The CLI prints them without a traceback and exits with status 2."""

from __future__ import annotations


class HftlError(Exception):
    """Base class of every error caused by the user's config, data or environment (not by a bug)."""

    exit_code = 2


class ConfigError(HftlError):
    """One or more problems in a run configuration, reported together.

    Args:
        problems (`list[str]`): one line per problem: where, what was expected, what was found, how to fix it.
        source (`str`, *optional*): the config file the problems come from.
    """

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s){where}:\n{lines}")


class DataError(HftlError):
    """The data does not match what the config says (missing column, unknown label, unreadable file...)."""


class OutputExistsError(HftlError):
    """The output directory holds a previous run and neither `overwrite` nor `resume` was asked for."""


class HubError(HftlError):
    """Pushing to or reading from the Hugging Face Hub failed in a way the user can fix."""


class TrainingInterrupted(HftlError):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint; the message says how to resume."""

    exit_code = 130


class NonFiniteLossError(HftlError):
    """The training loss became NaN or infinite; the message names the step and the last good checkpoint."""
