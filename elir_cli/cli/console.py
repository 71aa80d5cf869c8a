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

    @property
    def rich(self) -> Any:
        """The rich Console itself (what rich's live displays take: they enter it as a context)."""
        return self._console

    def print(self, message: Any, *, force: bool = False) -> None:
        if force or not self.quiet:
            self._console.print(message)

    def __getattr__(self, name: str) -> Any:  # what rich.progress needs of a Console
        return getattr(self._console, name)


def stderr_console(*, quiet: bool) -> StderrConsole:
    return StderrConsole(quiet=quiet)


def report_problems(console: StderrConsole, record: Any, *, note_label: str = "Warning") -> bool:
    """Print a file record's notes, and its ``Error:``/``Hint:`` lines if it failed; whether it failed."""
    from rich.markup import escape

    for note in record.warnings:
        console.print(f"[yellow]{note_label}:[/] {escape(note)}")
    if record.status != "failed":
        return False
    console.print(f"[bold red]Error:[/] {escape(record.error or 'failed')}", force=True)
    if record.hint:
        console.print(f"[yellow]Hint:[/] {escape(record.hint)}", force=True)
    return True
