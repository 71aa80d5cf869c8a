"""Restoring photos: the face pipeline, tiling, files on disk, batch plans.

Owns :mod:`.settings` (what a restoration takes, declared once: the CLI
options, the server's form fields, the Python keywords and the docs table
come from it), :mod:`.photo` (restore one image: faces or whole-image
tiles), :mod:`.tiling`, :mod:`.restorer` (the loaded-model restorer and the
one-call conveniences), :mod:`.files` (records and output names) and
:mod:`.batch` (a folder tree, resume and reports).

Layer 3. May import: elir_cli.faces, elir_cli.images, elir_cli.registry, elir_cli.model.
"""
