"""Restoring photos: the face pipeline, tiling, files on disk, batch plans.

Owns :mod:`.photo` (restore one image: faces or whole-image tiles),
:mod:`.tiling`, :mod:`.files` (one input file to one output file, with the
settings every command shares) and :mod:`.batch` (a folder tree, resume and
reports).

Layer 3. May import: elir_cli.faces, elir_cli.images, elir_cli.registry, elir_cli.model.
"""
