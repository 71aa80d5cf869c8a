"""Exporting ELIR for other runtimes: the whole restorer as one static ONNX graph.

Owns :mod:`.onnx` (export, the onnxruntime parity check, the model card).

Layer 4. May import: elir_cli.registry, elir_cli.model.
"""
