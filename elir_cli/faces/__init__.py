"""Faces: detection (RetinaFace, our copy of facexlib's network), alignment to FFHQ, pasting back,
and identity (ArcFace embeddings: ``elir eval``'s IDS and the per-face identity score).

Layer 2. May import: elir_cli.registry, elir_cli.model, elir_cli.images.
"""
