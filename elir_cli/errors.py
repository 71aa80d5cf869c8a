"""The error types of elir-cli.

Every failure a user can act on is an :class:`ElirError` with a one-line
message and, where useful, a hint saying how to fix it. The CLI maps these to
``Error: ...`` / ``Hint: ...`` lines and an exit code; no traceback is shown
unless ``--debug`` is given. This module imports nothing heavy.
"""

from __future__ import annotations

from typing import Callable


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's first line (or its type's name), cut at ``limit`` characters, for one-line errors."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


class _NotGiven:
    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN = _NotGiven()  # an error's ``value`` when it is about no particular value


def plain_name(option: str) -> str:
    """How the library names an option in a message: its keyword, as Python code writes it."""
    return option


class ElirError(Exception):
    """Base class of every error elir-cli raises on purpose.

    An error about an option carries it as data: ``option`` (the keyword, as
    :class:`~elir_cli.pipeline.settings.RestoreSettings` and the Python API
    name it), ``value`` (what was given) and ``mentions`` (every option the
    message or hint names, ``option`` first). The message and hint name them
    with ``{keyword}`` placeholders, so each front end renders them its own
    way (:meth:`render`): the library and the server as the keyword
    (``det_threshold``), the CLI as the flag (``--det-threshold``). Nothing
    parses a message to find the option.
    """

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None, option: str | None = None,
                 value: object = NOT_GIVEN, mentions: tuple[str, ...] = ()) -> None:
        self.template = message
        self.hint_template = hint
        self.option = option
        self.value = value
        self.mentions = tuple(dict.fromkeys(((option,) if option else ()) + tuple(mentions)))
        super().__init__(self.message)

    def render(self, name: Callable[[str], str] = plain_name) -> tuple[str, str | None]:
        """The message and the hint with each mentioned option written as ``name(option)``."""
        return _fill(self.template, self.mentions, name), (
            None if self.hint_template is None else _fill(self.hint_template, self.mentions, name))

    @property
    def message(self) -> str:
        return self.render()[0]

    @property
    def hint(self) -> str | None:
        return self.render()[1]

    @hint.setter
    def hint(self, text: str | None) -> None:
        self.hint_template = text

    def __str__(self) -> str:
        return self.message


def _fill(text: str, mentions: tuple[str, ...], name: Callable[[str], str]) -> str:
    for option in mentions:
        text = text.replace("{" + option + "}", name(option))
    return text


class UsageError(ElirError):
    """An option or argument that cannot work (bad value, conflicting options).

    ``UsageError("{steps} must be at least 1, got 0", option="steps", value=0)``
    reads ``steps must be ...`` in Python and ``--steps must ...`` on the
    command line; the server answers 422 with ``"field": "steps"``.
    """

    exit_code = 2


class CheckpointError(ElirError):
    """A weights file that cannot be read or does not fit the model."""


class StateDictMismatchError(CheckpointError):
    """Tensors missing from, unexpected in, or mis-shaped in a checkpoint."""

    def __init__(
        self,
        *,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
        source: str = "checkpoint",
    ) -> None:
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.mismatched = sorted(mismatched)
        parts = []
        if self.missing:
            parts.append(f"missing {len(self.missing)}: {_preview(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected {len(self.unexpected)}: {_preview(self.unexpected)}")
        if self.mismatched:
            shown = [f"{k} {tuple(got)} != {tuple(want)}" for k, got, want in self.mismatched]
            parts.append(f"wrong shape {len(shown)}: {_preview(shown)}")
        super().__init__(
            f"{source} does not fit the ELIR model ({'; '.join(parts)})",
            hint="check that the file is an ELIR checkpoint for the task you chose ({task})", mentions=("task",),
        )


class UnsafeCheckpointError(CheckpointError):
    """A pickle that holds more than tensors; it is refused, never executed."""


class ModelNotAvailableError(ElirError):
    """Weights that are not cached and cannot be fetched now."""


class DownloadError(ElirError):
    """A download that failed (network, HTTP status, checksum, disk)."""


class ChecksumMismatchError(DownloadError):
    """A file whose sha256 differs from the one the registry records; it is removed."""


class UploadError(ElirError):
    """A publish to the hub that failed: refused (401/403), unreachable, or rejected."""


class CacheError(ElirError):
    """The weights cache cannot be written (disk full, read-only folder, no permission)."""


class ImageError(ElirError):
    """An input image that cannot be read, or an output that cannot be written."""


class OutputExistsError(ImageError):
    """An output file that exists already and may not be overwritten (batches skip these)."""


def _preview(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")
