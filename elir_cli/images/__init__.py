"""Still images in and out: decoding, encoding, metadata, 16-bit PNG.

Owns reading any photo into upright float RGB (:mod:`.read`) and writing it
back in the right format with its metadata (:mod:`.write`). Knows nothing of
models or faces.

Layer 1. May import: nothing else in elir_cli but the base modules.
"""
