"""Exporting ELIR for other runtimes and tools.

Owns :mod:`.onnx` (the whole restorer as one static ONNX graph: export, the
onnxruntime parity check, the model card) and :mod:`.weights` (a task's
weights as our ``.safetensors`` with the task recorded, for spandrel and
ComfyUI).

Layer 4. May import: elir_cli.registry, elir_cli.model.
"""
