"""Restoring what a user points at: photos, videos, files and whole folders.

:class:`~.restorer.Restorer` (``from elir_cli import Restorer``) is the public
session object: it loads once and restores PIL images, arrays, paths, bytes
and videos. :class:`~.folder.FolderJob` restores a folder tree of photos and
videos, on this machine or on Ray, resumable, with a summary for reports;
:mod:`.videos` decides by content which inputs are videos. The CLI's
``elir restore`` and ``elir batch`` are thin over this package.

Layer 4b (above the features it joins). May import: elir_cli.video, elir_cli.distributed, elir_cli.pipeline, elir_cli.faces, elir_cli.images, elir_cli.registry, elir_cli.model.
"""
