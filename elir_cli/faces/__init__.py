"""Faces: detection (RetinaFace, our copy of facexlib's network), alignment to FFHQ, and pasting back.

Layer 2. May import: elir_cli.registry, elir_cli.model, elir_cli.images.
"""
