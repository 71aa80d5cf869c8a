"""The stderr console for progress, logs and hints (results go to stdout)."""

from __future__ import annotations

from typing import Any


class StderrConsole:
    """A rich Console on stderr that stays silent under --quiet unless forced."""

    def __init__(self, *, quiet: bool) -> None:
        from rich.console import Console

        self._console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.quiet = quiet

    @property
    def is_terminal(self) -> bool:
        return self._console.is_terminal

    def print(self, message: Any, *, force: bool = False) -> None:
        if force or not self.quiet:
            self._console.print(message)

    def __getattr__(self, name: str) -> Any:  # what rich.progress needs of a Console
        return getattr(self._console, name)


def stderr_console(*, quiet: bool) -> StderrConsole:
    return StderrConsole(quiet=quiet)
