"""Restoring what a user points at: photos, videos, files and whole folders.

:class:`~.restorer.Restorer` (``from elir_cli import Restorer``) is the public
session object: it loads once and restores PIL images, arrays, paths, bytes
and videos. :class:`~.files.FilesJob` restores the photos and videos a user
names (``elir restore``); :class:`~.folder.FolderJob` restores a folder tree
of photos and videos, on this machine or on Ray, resumable, with a summary
for reports;
:mod:`.videos` decides by content which inputs are videos. The CLI's
``elir restore`` and ``elir batch`` are thin over this package.

Layer 4b (above the features it joins). May import: elir_cli.video, elir_cli.distributed, elir_cli.pipeline, elir_cli.faces, elir_cli.images, elir_cli.registry, elir_cli.model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from elir_cli._lazy import lazy_exports

if TYPE_CHECKING:
    from .files import FilesJob, FilesResult
    from .folder import FolderJob, FolderResult
    from .restorer import Restorer

_LAZY = {"Restorer": "restorer", "FilesJob": "files", "FilesResult": "files", "FolderJob": "folder",
         "FolderResult": "folder"}
__all__ = ["FilesJob", "FilesResult", "FolderJob", "FolderResult", "Restorer"]


__getattr__ = lazy_exports(__name__, _LAZY, globals())
