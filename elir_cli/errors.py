"""The error types of elir-cli.

Every failure a user can act on is an :class:`ElirError` with a one-line
message and, where useful, a hint saying how to fix it. The CLI maps these to
``Error: ...`` / ``Hint: ...`` lines and an exit code; no traceback is shown
unless ``--debug`` is given. This module imports nothing heavy.
"""

from __future__ import annotations


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's first line (or its type's name), cut at ``limit`` characters, for one-line errors."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


class ElirError(Exception):
    """Base class of every error elir-cli raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(ElirError):
    """An option or argument that cannot work (bad value, conflicting options)."""

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
            hint="check that the file is an ELIR checkpoint for the task you chose (--task)",
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
