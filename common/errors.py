"""The fedrec exception hierarchy: one root, a few kinds a user can act on.

Every error says the constraint, the offending value and the fix. The CLI
prints ``str(error)`` and exits with ``error.exit_code``; no stack trace.
"""

from __future__ import annotations

from dataclasses import dataclass


class FedrecError(Exception):
    """Root of every error fedrec raises on purpose."""

    exit_code: int = 1


class ConfigError(FedrecError):
    """A setting is missing, of the wrong type or out of range."""

    exit_code = 2


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

    exit_code = 3
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

    exit_code = 4
