"""Faces: detection (facexlib RetinaFace), alignment to FFHQ, and pasting back.

Layer 2. May import: elir_cli.registry, elir_cli.model, elir_cli.images.
"""
