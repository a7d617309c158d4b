"""The fedrec exception hierarchy: one root, a few kinds a user can act on.

Every error says the constraint, the offending value and the fix. The CLI
prints ``str(error)`` and exits with ``error.exit_code``; no stack trace.
Every exit status fedrec uses is listed once, in :class:`ExitCode`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """The exit statuses of every ``fedrec`` command: one meaning each."""

    OK = 0
    FAILED = 1  # a check failed (``fedrec audit verify``), or an error with no kind of its own
    CONFIG = 2  # a setting is missing, of the wrong type or out of range
    DATA = 3  # an input file cannot be used
    RUN_DIR = 4  # a run directory is missing, incomplete or would be overwritten
    FEDERATION_FAILED = 5  # the run failed: its round loop gave up, or ``fedrec run`` saw it fail
    SWEEP_INCOMPLETE = 6  # some runs of a sweep failed; rerunning retries them
    JOIN_FAILED = 7  # a merchant cannot join its coordinator
    CONTROL_FAILED = 8  # the SuperLink's Control API refused a command or cannot be reached
    RUN_REFUSED = 9  # a merchant refuses to execute a run
    INTERRUPTED = 130  # stopped by Ctrl-C (128 + SIGINT, as a shell reports it)


class FedrecError(Exception):
    """Root of every error fedrec raises on purpose."""

    exit_code: int = ExitCode.FAILED


class ConfigError(FedrecError):
    """A setting is missing, of the wrong type or out of range."""

    exit_code = ExitCode.CONFIG


@dataclass(frozen=True)
class DataProblem:
    """One problem found in an input file.

    ``line`` is 1-based and counts the header line; ``None`` means the problem
    concerns the whole file (empty file, missing column, ...).
    """

    line: int | None
    message: str

    def render(self) -> str:
        where = f"line {self.line}" if self.line is not None else "file"
        return f"{where}: {self.message}"


class DataError(FedrecError):
    """An input file cannot be used. Carries every problem found, not just the first."""

    exit_code = ExitCode.DATA
    max_listed = 10

    def __init__(self, path: str, problems: list[DataProblem], *, hint: str = "") -> None:
        self.path = path
        self.problems = list(problems)
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"Cannot read events from {self.path}: {count} {noun}."]
        for problem in self.problems[: self.max_listed]:
            lines.append(f"  {self.path}, {problem.render()}")
        if count > self.max_listed:
            lines.append(f"  ... and {count - self.max_listed} more.")
        if self.hint:
            lines.append(f"  Fix: {self.hint}")
        return "\n".join(lines)


class RunDirError(FedrecError):
    """A run directory is missing, incomplete or would be overwritten."""

    exit_code = ExitCode.RUN_DIR
